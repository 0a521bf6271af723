"""Errors that the command line reports as one clear line, never a traceback."""

from __future__ import annotations

from pathlib import Path


class LiverlibError(ValueError):
    """A problem with the user's input or setup, reported as one line.

    Parameters
    ----------
    message : str
        What is wrong, phrased for the user.
    path : str or Path, optional
        The file or folder concerned; it is put first in the message.
    """

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        self.reason = message
        super().__init__(f"{path}: {message}" if path is not None else message)


class DataError(LiverlibError):
    """A data file or folder that cannot be used (bad NIfTI, labels, geometry...)."""


class ConfigError(LiverlibError):
    """An unknown or ill-typed configuration key."""
