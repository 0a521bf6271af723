"""Trained model files of a run: finding them and loading them for inference."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from liverlib.errors import LiverlibError
from liverlib.runfolder import RunFolder

if TYPE_CHECKING:  # keras is imported only when a model is loaded: `liverlib predict --help` stays light
    import keras

ModelPair = tuple["keras.Model", "keras.Model"]


def model_paths(run_dir: str | Path, fold: int | None = None) -> list[tuple[int, Path, Path]]:
    """The trained model files of a run: ``(fold, liver.keras, lesion.keras)`` per fold.

    Only checks that the files exist (no Keras import), so a wrong run folder
    is reported at once.

    Parameters
    ----------
    run_dir : str or Path
    fold : int, optional
        One fold; default every fold under ``RUN/models`` (an ensemble).

    Raises
    ------
    LiverlibError
        If the run folder does not exist, holds no trained model, lacks the
        requested fold, or a fold lacks one of its two models.
    """
    run = RunFolder(Path(run_dir))
    if not run.root.is_dir():
        raise LiverlibError("no such run folder", run.root)
    models_dir = run.models
    found = run.trained_folds()
    if not found:
        raise LiverlibError("no trained models here; run `liverlib run` first", models_dir)
    if fold is not None:
        if int(fold) not in found:
            raise LiverlibError(f"no fold {fold} here (trained folds: {', '.join(map(str, found))})", models_dir)
        found = [int(fold)]
    out = []
    for k in found:
        liver, lesion = run.model_file(k, "liver"), run.model_file(k, "lesion")
        for path in (liver, lesion):
            if not path.is_file():
                raise LiverlibError(
                    f"fold {k} has no {path.stem} model (training incomplete?); finish it with `liverlib run` "
                    "or choose a complete fold with --fold",
                    path,
                )
        out.append((k, liver, lesion))
    return out


def run_precision(cfg: dict) -> str:
    """The run's ``predict.precision``; float32 for runs made before the key existed."""
    return cfg["predict"].get("precision", "float32")


def load_model_file(path: Path, precision: str = "float32") -> "keras.Model":
    """One ``.keras`` file for inference (no optimizer state), in ``precision``; one clear error if unreadable."""
    from liverlib.networks import (  # Keras loads here, not at import
        inference_copy,
        load_model,
    )

    try:
        model = load_model(path, compile=False)  # inference only: no optimizer state
    except Exception as exc:  # a truncated or foreign .keras file raises many types
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise LiverlibError(f"cannot load this model ({type(exc).__name__}: {reason})", path) from None
    try:
        return inference_copy(model, precision)
    except ValueError as exc:  # bfloat16 on a CPU without bfloat16 units
        raise LiverlibError(str(exc)) from None


def load_models(run_dir: str | Path, fold: int | None = None, precision: str = "float32") -> list[ModelPair]:
    """Load the trained ``(liver, lesion)`` model pairs of a run.

    Parameters
    ----------
    run_dir : str or Path
        A run folder with ``models/fold-K/liver.keras`` and ``lesion.keras``.
    fold : int, optional
        Load one fold; default every fold (their mean is the ensemble's prediction).
    precision : {"float32", "bfloat16"}
        Compute precision of the loaded networks (:func:`liverlib.networks.inference_copy`).

    Returns
    -------
    list of (keras.Model, keras.Model)
        One ``(liver_model, lesion_model)`` pair per fold, sorted by fold.

    Raises
    ------
    LiverlibError
        See :func:`model_paths`; also for a model file that cannot be loaded.
    """
    return [(load_model_file(liver, precision), load_model_file(lesion, precision)) for _, liver, lesion in model_paths(run_dir, fold)]
