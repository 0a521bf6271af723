"""Screening a setting: retrain one stage per fold and score it on the test scans' cached slices."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from liverlib.config import apply_overrides, stage_number
from liverlib.data.sources import open_cache
from liverlib.data.splits import fit_and_val, read_splits, select_folds
from liverlib.evaluation.metrics import dice_counts, global_dice
from liverlib.inference.predictor import network_input, predict_slices
from liverlib.runfolder import RunFolder, load_run
from liverlib.training.folds import stage_seed, train_stage


def screen_folds(cache, folds: list[dict], cfg: dict, stage: str = "lesion", threshold: float = 0.5) -> pd.DataFrame:
    """Retrain one stage per fold and score it on the fold's test slices: a quick screen of a setting.

    Each fold trains ``stage`` from scratch on its fit scans (``train`` minus
    ``val``), with the seed :func:`train_fold` would use, and predicts the cached
    slices of its test scans: whole slices for the liver, the *reference* liver
    ROIs for the lesions. That isolates the network from the liver stage, the
    CRF and the postprocessing, at about a minute per fold on 2 cores under
    ``default``. Nothing is written.

    Parameters
    ----------
    cache : liverlib.data.cache.SliceCache
    folds : list of dict
        Entries of ``splits.json``.
    cfg : dict
        A resolved config, e.g. a run's with overrides applied (:func:`liverlib.config.apply_overrides`).
    stage : {"liver", "lesion"}
    threshold : float
        Probability at or above which a pixel is foreground.

    Returns
    -------
    pandas.DataFrame
        One row per test scan: ``fold``, ``case``, and pixel counts ``reference``,
        ``predicted`` and ``intersection`` over its slices, and ``dice`` (1.0 when
        both are empty). :func:`screen_summary` pools them.
    """
    rows = []
    for fold in folds:
        fit_ids, val_ids = fit_and_val(fold)
        model, _ = train_stage(cache, stage, fit_ids, val_ids, cfg, stage_seed(cfg["seed"], fold["fold"], stage), verbose=0)
        for case in fold["test"]:
            x, y = cache.load([case], stage_number(stage))
            predicted = predict_slices([model], network_input(x, int(cache.config["levels"]))) >= threshold
            inter, pred, ref = dice_counts(predicted, y)
            rows.append({"fold": fold["fold"], "case": int(case), "reference": ref, "predicted": pred,
                         "intersection": inter, "dice": global_dice([(inter, pred, ref)])})  # one scan: its Dice
    return pd.DataFrame(rows, columns=["fold", "case", "reference", "predicted", "intersection", "dice"])


def screen_summary(table: pd.DataFrame) -> dict:
    """Pooled and mean Dice of a :func:`screen_folds` table, and the false-positive
    pixels on the scans without foreground."""
    return {
        "pooled_dice": global_dice(table[["intersection", "predicted", "reference"]].to_numpy()),
        "mean_dice": float(table["dice"].mean()),
        "false_positive_px_without_foreground": int(table.loc[table["reference"] == 0, "predicted"].sum()),
        "scans": len(table),
    }


def screen(run_dir: str | Path, stage: str = "lesion", which: str | int | list[int] = "all",
           overrides: list[str] | dict | None = None, threshold: float = 0.5) -> pd.DataFrame:
    """:func:`screen_folds` on a run's folds and cache, with config overrides.

    For example, ``screen("runs/default", "lesion", [0, 1, 2], ["train.epochs=10"])``
    asks what ten epochs would do to the lesion network, without touching the run.
    """
    cfg = apply_overrides(load_run(run_dir), overrides)
    cache = open_cache(cfg, progress=False)
    return screen_folds(cache, select_folds(read_splits(RunFolder(Path(run_dir)).splits), which), cfg, stage, threshold)
