"""Two-stage training of the Mixed-UNet, fold by fold (paper sections 3.4-3.6 and 4.1).

Stage 1 ("liver") learns liver vs background on whole 96x96 slices; stage 2
("lesion") learns lesion vs the rest on 96x96 crops of the liver region. Stage 2
trains on the reference liver ROIs, as Christ et al. (2016) did, so its input
does not depend on how good stage 1 happens to be; at inference it sees the ROI
of the predicted liver.

Each fold writes, atomically, ``models/fold-K/liver.keras``, ``lesion.keras``
and ``history.csv`` (one row per stage and epoch). A stage whose model and
history rows exist is skipped, so an interrupted run resumes where it stopped.
Validation uses the fold's ``val`` scans, a part of its training scans that is
never fitted; the test scans are never seen.

Both stages take the config's ``model`` and ``train`` sections; keys under
``lesion_stage`` replace them for stage 2 only (:func:`liverlib.config.stage_config`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from liverlib.atomic import atomic_path
from liverlib.config import stage_config
from liverlib.runfolder import RunFolder

STAGES = ("liver", "lesion")
_STAGE_NUMBER = {"liver": 1, "lesion": 2}


def set_seed(seed: int) -> None:
    """Seed Python, numpy and the Keras backend; make TensorFlow ops deterministic."""
    import keras

    keras.utils.set_random_seed(int(seed))
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def stage_seed(seed: int, fold: int, stage: str) -> int:
    """A distinct, recorded seed for every (fold, stage)."""
    return int(seed) + 1000 * int(fold) + _STAGE_NUMBER[stage]


def build_model(cfg: dict):
    """The compiled Mixed-UNet of a config's ``model`` and ``train`` sections."""
    from liverlib.model import compile_model, mixed_unet

    size = cfg["preprocess"]["size"]
    model = mixed_unet(input_shape=(size, size, 1), **cfg["model"])  # the section's keys are its arguments
    train = cfg["train"]
    return compile_model(model, loss=train["loss"], learning_rate=train["learning_rate"],
                         ema_momentum=train.get("ema_momentum", 0.0))  # runs made before the key: none


def _dataset(cache, case_ids, stage: str, cfg: dict, seed: int, training: bool):
    from liverlib.dataset import SliceDataset

    t = cfg["train"]
    return SliceDataset(
        cache,
        case_ids,
        stage=_STAGE_NUMBER[stage],
        batch_size=t["batch_size"],
        augment=cfg["augment"] if training and cfg["augment"]["enabled"] else None,
        shuffle=training,
        seed=seed,
        steps_per_epoch=t["steps_per_epoch"] if training else 0,
        foreground_fraction=t["lesion_foreground_fraction"] if training and stage == "lesion" else 0.0,
        workers=2 if training else 1,  # a prefetch thread keeps augmentation off the critical path
    )


def train_stage(cache, stage: str, train_ids: list[int], val_ids: list[int], cfg: dict, seed: int, verbose: int = 2):
    """Train one stage from scratch; return the model and its per-epoch history.

    Parameters
    ----------
    cache : liverlib.cache.SliceCache
    stage : {"liver", "lesion"}
    train_ids, val_ids : list of int
        Scans to fit on and scans to validate on (disjoint).
    cfg : dict
        The run's resolved config.
    seed : int
    verbose : int
        Keras verbosity; 2 prints one line per epoch (headless runs).
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if set(train_ids) & set(val_ids):
        raise ValueError("training and validation scans overlap")
    cfg = stage_config(cfg, stage)  # the lesion network may differ (lesion_stage section)
    set_seed(seed)
    model = build_model(cfg)
    train_data = _dataset(cache, train_ids, stage, cfg, seed, training=True)
    val_data = _dataset(cache, val_ids, stage, cfg, seed, training=False) if val_ids else None
    # The final weights are kept, as in the paper (20 epochs, no early stopping);
    # validation feeds the curves. (Restoring the best val-loss epoch picked
    # under-trained epochs on short budgets: val loss and Dice disagree early.)
    start = time.perf_counter()
    history = model.fit(train_data, validation_data=val_data, epochs=cfg["train"]["epochs"],
                        verbose=verbose, shuffle=False)  # the dataset shuffles itself, seeded
    seconds = time.perf_counter() - start
    table = pd.DataFrame(history.history)
    table.insert(0, "epoch", np.arange(1, len(table) + 1))
    table.insert(0, "stage", stage)
    table["seconds"] = round(seconds / max(len(table), 1), 2)
    table["slices_per_epoch"] = len(train_data) * cfg["train"]["batch_size"]
    table["seed"] = seed
    return model, table


def read_history(model_dir: str | Path) -> pd.DataFrame:
    """A fold's ``history.csv`` (empty if none)."""
    path = Path(model_dir) / "history.csv"
    return pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["stage", "epoch"])


def stage_complete(model_dir: str | Path, stage: str) -> bool:
    """True when the stage's model file and its history rows both exist."""
    history = read_history(model_dir)
    return (Path(model_dir) / f"{stage}.keras").is_file() and (history["stage"] == stage).any()


def fit_and_val(fold: dict) -> tuple[list[int], list[int]]:
    """A fold's scans to fit on (``train`` minus ``val``) and to validate on."""
    val_ids = list(fold.get("val", []))
    return [c for c in fold["train"] if c not in set(val_ids)], val_ids


def train_fold(run_dir: str | Path, fold: dict, cfg: dict, cache, stages=STAGES, verbose: int = 2) -> pd.DataFrame:
    """Train the requested stages of one fold, skipping those already complete.

    Parameters
    ----------
    run_dir : str or Path
    fold : dict
        One entry of ``splits.json``: ``fold``, ``train``, ``val``, ``test``.
    cfg : dict
    cache : liverlib.cache.SliceCache
    stages : sequence of {"liver", "lesion"}

    Returns
    -------
    pandas.DataFrame
        The fold's whole history.
    """
    model_dir = RunFolder(Path(run_dir)).model_dir(fold["fold"])
    model_dir.mkdir(parents=True, exist_ok=True)
    fit_ids, val_ids = fit_and_val(fold)
    if set(fold["train"]) & set(fold["test"]):
        raise ValueError(f"fold {fold['fold']}: training and test scans overlap")
    for stage in stages:
        if stage_complete(model_dir, stage):
            if verbose:
                print(f"fold {fold['fold']} {stage}: complete, skipped", flush=True)
            continue
        if verbose:
            print(f"fold {fold['fold']} {stage}: {len(fit_ids)} training scans, {len(val_ids)} validation scans", flush=True)
        model, table = train_stage(cache, stage, fit_ids, val_ids, cfg, stage_seed(cfg["seed"], fold["fold"], stage), verbose)
        with atomic_path(model_dir / f"{stage}.keras") as tmp:
            model.save(tmp)
        history = read_history(model_dir)
        history = pd.concat([history[history["stage"] != stage], table], ignore_index=True)
        with atomic_path(model_dir / "history.csv") as tmp:
            history.to_csv(tmp, index=False)
    return read_history(model_dir)


def select_folds(folds: list[dict], which: str | int | list[int] = "all") -> list[dict]:
    """The folds a notebook parameter names: ``"all"``, an int, or a list of ints."""
    if which == "all":
        return folds
    wanted = [which] if isinstance(which, int) else list(which)
    known = {f["fold"] for f in folds}
    unknown = sorted(set(wanted) - known)
    if unknown:
        raise ValueError(f"no fold {unknown} in splits.json (folds {min(known)}-{max(known)})")
    return [f for f in folds if f["fold"] in set(wanted)]


def run_stage(run_dir: str | Path, stage: str, which: str | int | list[int] = "all", verbose: int = 2):
    """Train one stage for the selected folds of a run, building or reusing the slice cache.

    This is what notebooks 04 (liver) and 05 (lesion) call.

    Returns
    -------
    cache : liverlib.cache.SliceCache
    history : pandas.DataFrame
        Every selected fold's history, with a ``fold`` column.
    """
    from liverlib.runfolder import load_run, open_cache
    from liverlib.splits import read_splits

    cfg = load_run(run_dir)
    run = RunFolder(Path(run_dir))
    cache = open_cache(cfg, progress=bool(verbose))
    tables = []
    for fold in select_folds(read_splits(run.splits), which):
        history = train_fold(run_dir, fold, cfg, cache, stages=(stage,), verbose=verbose)
        tables.append(history.assign(fold=fold["fold"]))
    return cache, pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def sample_batch(cache, stage: str, case_ids: list[int], cfg: dict, seed: int = 0):
    """One augmented training batch, as the network sees it (for Fig. 6)."""
    data = _dataset(cache, case_ids, stage, stage_config(cfg, stage), seed, training=True)
    return data[0]


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
    cache : liverlib.cache.SliceCache
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
    from liverlib.inference import network_input, predict_slices
    from liverlib.metrics import dice_counts, global_dice

    rows = []
    for fold in folds:
        fit_ids, val_ids = fit_and_val(fold)
        model, _ = train_stage(cache, stage, fit_ids, val_ids, cfg, stage_seed(cfg["seed"], fold["fold"], stage), verbose=0)
        for case in fold["test"]:
            x, y = cache.load([case], _STAGE_NUMBER[stage])
            predicted = predict_slices([model], network_input(x, int(cache.config["levels"]))) >= threshold
            inter, pred, ref = dice_counts(predicted, y)
            rows.append({"fold": fold["fold"], "case": int(case), "reference": ref, "predicted": pred,
                         "intersection": inter, "dice": global_dice([(inter, pred, ref)])})  # one scan: its Dice
    return pd.DataFrame(rows, columns=["fold", "case", "reference", "predicted", "intersection", "dice"])


def screen_summary(table: pd.DataFrame) -> dict:
    """Pooled and mean Dice of a :func:`screen_folds` table, and the false-positive
    pixels on the scans without foreground."""
    from liverlib.metrics import global_dice

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
    from liverlib.config import apply_overrides
    from liverlib.runfolder import load_run, open_cache
    from liverlib.splits import read_splits

    cfg = apply_overrides(load_run(run_dir), overrides)
    cache = open_cache(cfg, progress=False)
    return screen_folds(cache, select_folds(read_splits(RunFolder(Path(run_dir)).splits), which), cfg, stage, threshold)
