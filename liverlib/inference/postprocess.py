"""Lesion postprocessing chosen on each fold's validation scans.

A slice-wise lesion network leaves small false-positive blobs in homogeneous
liver, and one such blob gives a lesion-free scan a lesion Dice of 0. Many LiTS
entries therefore drop lesion components below a minimum volume. Here the
minimum is not fixed by hand: as nnU-Net decides its postprocessing on held-out
predictions, each fold chooses it among the candidates of
``predict.min_lesion_ml`` by the mean lesion Dice on its own validation scans
(never its test scans), and records the choice in
``models/fold-K/postprocessing.json``. ``[0.0]`` (the base and ``paper``
profiles) keeps every component.

A removed lesion component becomes liver: it was inside the predicted liver.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from liverlib.atomic import write_json
from liverlib.evaluation.metrics import dice
from liverlib.runfolder import RunFolder
from liverlib.transforms.morphology import connected_components, voxel_ml

__all__ = ["remove_small_lesions", "choose_min_lesion_ml", "write_choice", "read_min_lesion_ml", "validated_min_lesion_ml", "choices"]


def remove_small_lesions(labels: np.ndarray, spacing: Sequence[float], min_ml: float) -> np.ndarray:
    """Relabel lesion components (26-connected) smaller than ``min_ml`` as liver.

    Parameters
    ----------
    labels : ndarray of int, (planes, rows, columns), values in {0, 1, 2}
    spacing : (float, float, float)
        mm per voxel.
    min_ml : float
        Smallest lesion volume kept, in mL (1 mL = 1000 mm^3); 0 keeps all.

    Returns
    -------
    ndarray
        A copy of ``labels`` (the input itself when nothing changes).

    Examples
    --------
    >>> labels = np.array([[[2, 2, 1, 2, 0]]], np.uint8)
    >>> remove_small_lesions(labels, (10.0, 10.0, 10.0), min_ml=1.5)   # voxels of 1 mL
    array([[[2, 2, 1, 1, 0]]], dtype=uint8)
    """
    if not float(min_ml) >= 0:
        raise ValueError(f"min_ml must be >= 0 mL, got {min_ml!r}")
    lesion = np.asarray(labels) == 2
    if not min_ml or not lesion.any():
        return labels
    components, size = connected_components(lesion)
    volume_ml = size * voxel_ml(spacing)
    small = (volume_ml < float(min_ml)) & (np.arange(len(volume_ml)) > 0)
    out = np.array(labels, copy=True)
    out[small[components]] = 1
    return out


def choose_min_lesion_ml(predictions: Sequence[tuple[np.ndarray, np.ndarray, Sequence[float]]],
                         candidates: Sequence[float]) -> tuple[float, dict[str, float]]:
    """The candidate minimum lesion volume with the best mean lesion Dice.

    Parameters
    ----------
    predictions : sequence of (labels, reference, spacing)
        Predicted and reference label volumes {0, 1, 2} of the validation scans.
    candidates : sequence of float
        Minimum volumes to try, mL.

    Returns
    -------
    best : float
        The candidate with the highest mean lesion Dice; ties go to the smallest
        (remove as little as the data allow). With no scans, the smallest.
    scores : dict
        Mean lesion Dice per candidate, keyed by ``str(candidate)``. A scan with
        no lesion in the reference nor the prediction scores 1 (LiTS).
    """
    candidates = sorted(float(c) for c in candidates)
    if not candidates:
        raise ValueError("no candidate minimum lesion volume")
    scores = {}
    for min_ml in candidates:
        values = [dice(remove_small_lesions(pred, spacing, min_ml) == 2, np.asarray(ref) == 2)
                  for pred, ref, spacing in predictions]
        scores[str(min_ml)] = float(np.mean(values)) if values else float("nan")
    if not predictions:
        return candidates[0], scores
    best = max(candidates, key=lambda c: (round(scores[str(c)], 9), -c))
    return best, scores


def write_choice(run_dir: str | Path, fold: int, best: float, scores: dict, cases: Sequence[int]) -> Path:
    """Record a fold's choice atomically."""
    path = RunFolder(Path(run_dir)).postprocessing(fold)
    write_json(path, {"min_lesion_ml": best, "validation_cases": [int(c) for c in cases],
                      "mean_lesion_dice": {k: round(v, 6) for k, v in scores.items()}})
    return path


def _read_choice(run_dir: str | Path, fold: int) -> dict | None:
    path = RunFolder(Path(run_dir)).postprocessing(fold)
    return json.loads(path.read_text()) if path.is_file() else None


def read_min_lesion_ml(run_dir: str | Path, fold: int) -> float | None:
    """A fold's chosen minimum lesion volume (mL), or None if it has not chosen."""
    record = _read_choice(run_dir, fold)
    return None if record is None else float(record["min_lesion_ml"])


def validated_min_lesion_ml(run_dir: str | Path, folds: Sequence[int]) -> float:
    """The median of the folds' chosen minimum lesion volumes (mL): what an ensemble of them applies.

    0.0 when none of ``folds`` has chosen (a profile with one candidate, or a run made before the choice).
    """
    chosen = [c for c in (read_min_lesion_ml(run_dir, k) for k in folds) if c is not None]
    return float(np.median(chosen)) if chosen else 0.0


def choices(run_dir: str | Path, folds: Sequence[dict]) -> pd.DataFrame:
    """One row per fold that has chosen: its validation scans, the choice and the mean Dice per candidate."""
    rows = []
    for fold in folds:
        record = _read_choice(run_dir, fold["fold"])
        if record is not None:
            rows.append({"fold": fold["fold"], "validation scans": ", ".join(map(str, record["validation_cases"])),
                         "min lesion mL": record["min_lesion_ml"],
                         **{f"Dice, min {k} mL": v for k, v in record["mean_lesion_dice"].items()}})
    return pd.DataFrame(rows)
