"""Remaining-time estimate of a headless run, from the run folder's finished work and a reference run.

``liverlib run`` prints a line like ``[05_lesion_training] 3/10 folds; about 14
min left`` when each notebook starts and every ``interval`` seconds while it
runs. The estimate takes the notebook seconds of a reference run of the same
profile (``reference_timings.yaml``, with the machine it ran on) and scales
them by this run's pace so far: the seconds spent on the notebooks done, and on
the done share of the current one, over the reference's seconds for the same
work. The done share of a notebook comes from its results in the run folder:
trained folds (04, 05) and predicted cases (06). Runs on other data or
profiles without a reference get the current notebook's own estimate only.
"""

from __future__ import annotations

import threading
import time
from importlib import resources
from pathlib import Path
from typing import Callable

import yaml

from liverlib.data.splits import read_splits
from liverlib.runfolder import RunFolder

__all__ = ["reference_seconds", "notebook_progress", "remaining_seconds", "ProgressTicker"]

#: Notebook -> what its work units are, for the lines printed.
_UNITS = {"04_liver_training": "folds", "05_lesion_training": "folds", "06_crf": "cases"}


def reference_seconds(cfg: dict) -> dict[str, float]:
    """Seconds per notebook of the reference run of the config's profile ({} when none applies).

    A reference holds only for the embedded phantom cohort (``data.dir`` empty)
    with the profile's own cohort size.
    """
    table = yaml.safe_load(resources.files("liverlib").joinpath("reference_timings.yaml").read_text())
    entry = table.get(cfg.get("profile", ""))
    if not entry or cfg["data"]["dir"] or int(cfg["data"]["phantom_cases"]) != int(entry["phantom_cases"]):
        return {}
    return {name: float(seconds) for name, seconds in entry["seconds"].items()}


def notebook_progress(run_dir: str | Path, name: str) -> tuple[int, int] | None:
    """``(done, total)`` work units of a notebook from the run folder, or None if it has none."""
    run = RunFolder(Path(run_dir))
    if name not in _UNITS or not run.splits.is_file():
        return None
    folds = read_splits(run.splits)
    if name == "06_crf":
        cases = [c for fold in folds for c in fold["test"]]
        return sum(run.prediction(c, 1).is_file() for c in cases), len(cases)
    stage = "liver" if name == "04_liver_training" else "lesion"
    return sum(run.model_file(fold["fold"], stage).is_file() for fold in folds), len(folds)


def remaining_seconds(reference: dict[str, float], done: dict[str, float], current: str | None,
                      current_elapsed: float, current_share: float | None) -> float | None:
    """Seconds left: the reference's seconds of the work left, times this run's pace.

    Parameters
    ----------
    reference : dict
        Notebook -> reference seconds (:func:`reference_seconds`).
    done : dict
        Notebook -> this run's seconds, for the notebooks finished in this process.
    current : str or None
        The notebook running now.
    current_elapsed : float
        Its seconds so far.
    current_share : float or None
        Its done share in [0, 1] (None: unknown, taken as 0).

    Returns
    -------
    float or None
        None without a reference. Before any work is timed the pace is 1.

    Examples
    --------
    >>> ref = {"a": 10.0, "b": 100.0, "c": 50.0}
    >>> remaining_seconds(ref, {"a": 20.0}, "b", 100.0, 0.5)  # pace 2: (20 + 100) / (10 + 50)
    200.0
    """
    if not reference:
        return None
    share = min(max(current_share or 0.0, 0.0), 1.0)
    spent = sum(done.values()) + (current_elapsed if current else 0.0)
    expected = sum(reference.get(n, 0.0) for n in done) + (share * reference.get(current, 0.0) if current else 0.0)
    pace = spent / expected if spent > 0 and expected > 0 else 1.0  # nothing timed yet: the reference's pace
    finished = set(done) | ({current} if current else set())
    left = sum(s for n, s in reference.items() if n not in finished)
    if current:
        left += (1.0 - share) * reference.get(current, 0.0)
    return pace * left


class ProgressTicker:
    """Prints the progress line of the running notebook every ``interval`` seconds, in a daemon thread.

    Parameters
    ----------
    run_dir : str or Path
    cfg : dict
        The run's config.
    notebooks : sequence of str
        The notebooks this run will execute, in order.
    interval : float
        Seconds between lines while a notebook runs.
    log : callable
        Receives each line (default ``print`` with flush).
    """

    def __init__(self, run_dir, cfg: dict, notebooks, interval: float = 120.0,
                 log: Callable[[str], None] | None = None):
        self.run_dir = Path(run_dir)
        self.reference = {n: s for n, s in reference_seconds(cfg).items() if n in set(notebooks)}
        self.interval = float(interval)
        self.log = log or (lambda line: print(line, flush=True))
        self.done: dict[str, float] = {}
        self.current: str | None = None
        self._started = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def line(self) -> str:
        """The progress line of the current notebook now."""
        elapsed = time.perf_counter() - self._started
        progress = notebook_progress(self.run_dir, self.current) if self.current else None
        parts = [f"[{self.current}]"]
        share = None
        if progress and progress[1]:
            share = progress[0] / progress[1]
            parts.append(f"{progress[0]}/{progress[1]} {_UNITS[self.current]};")
        left = remaining_seconds(self.reference, self.done, self.current, elapsed, share)
        if left is None and share:  # no reference: this notebook's own pace
            left = elapsed / share * (1.0 - share)
            parts.append(f"about {left / 60:.0f} min left in this notebook")
        elif left is not None:
            parts.append(f"about {left / 60:.0f} min left in the run")
        else:
            parts.append(f"{elapsed / 60:.0f} min so far")
        return " ".join(parts)

    def start(self, name: str) -> None:
        """A notebook starts: print its line now and then every ``interval`` seconds."""
        self.stop()
        self.current, self._started = name, time.perf_counter()
        self.log(self.line())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, args=(self._stop,), daemon=True)
        self._thread.start()

    def finish(self, name: str, seconds: float) -> None:
        """A notebook finished in ``seconds``."""
        self.stop()
        self.done[name] = float(seconds)
        self.current = None

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            self.log(self.line())
