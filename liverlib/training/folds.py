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

import json
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import keras
import numpy as np
import pandas as pd

from liverlib.atomic import atomic_path
from liverlib.config import STAGES, stage_config, stage_number
from liverlib.data.dataset import SliceDataset
from liverlib.data.sources import open_cache
from liverlib.data.splits import fit_and_val, read_splits, select_folds
from liverlib.networks import compile_model, mixed_unet
from liverlib.runfolder import RunFolder, load_run


def set_seed(seed: int) -> None:
    """Seed Python, numpy and the Keras backend; make TensorFlow ops deterministic."""
    keras.utils.set_random_seed(int(seed))
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # only under the TensorFlow backend

        tf.config.experimental.enable_op_determinism()


@contextmanager
def private_layer_seeds(seed: int) -> Iterator[None]:
    """Build networks whose unseeded layers get the seeds that ``set_seed(seed)`` gives, whatever other threads do.

    Keras seeds every unseeded layer (dropout, mixed pooling) from Python's
    global ``random``, which other threads of the process draw from too (a
    Dask worker's do). Inside this block Keras draws from a private generator
    on the stream ``random.seed(seed)`` starts; on exit the global generator
    continues from where the private one stopped, as if the draws had been
    its own. Call it right after :func:`set_seed`.
    """
    from keras.src.random import seed_generator  # Keras' one source of default seeds

    if not hasattr(seed_generator, "python_random"):  # another Keras: nothing to isolate
        yield
        return
    shared, private = seed_generator.python_random, random.Random(int(seed))
    seed_generator.python_random = private
    try:
        yield
    finally:
        seed_generator.python_random = shared
        random.setstate(private.getstate())


def stage_seed(seed: int, fold: int, stage: str) -> int:
    """A distinct, recorded seed for every (fold, stage)."""
    return int(seed) + 1000 * int(fold) + stage_number(stage)


def build_model(cfg: dict):
    """The compiled Mixed-UNet of a config's ``model`` and ``train`` sections."""
    size = cfg["preprocess"]["size"]
    model = mixed_unet(input_shape=(size, size, 1), **cfg["model"])  # the section's keys are its arguments
    train = cfg["train"]
    model = compile_model(model, loss=train["loss"], learning_rate=train["learning_rate"],
                          ema_momentum=train.get("ema_momentum", 0.0))  # runs made before the key: none
    # Adam's slots made here, not inside the first traced step: tracing it takes ~2 s less.
    model.optimizer.build(model.trainable_variables)
    return model


class CompiledModels:
    """One compiled network per stage config, reused from fold to fold.

    Tracing a network's training step costs seconds every time a new model is
    fitted (docs/experiments.md, session 10, has what reuse saves).
    :meth:`fresh` still builds the seeded model of each fold, then copies its
    weights, seed states and zeroed optimizer into the network compiled for the
    first fold with that config, whose traced steps are reused: the training is
    the one a new model gets, at no trace.
    """

    def __init__(self) -> None:
        self._models: dict[str, keras.Model] = {}

    def fresh(self, cfg: dict) -> keras.Model:
        """The compiled model of :func:`build_model` (seed it first), with traces reused."""
        new = build_model(cfg)
        key = json.dumps([cfg["preprocess"]["size"], cfg["model"], cfg["train"]], sort_keys=True)
        model = self._models.setdefault(key, new)
        if model is not new:
            for target, source in zip(model.variables + model.optimizer.variables,
                                      new.variables + new.optimizer.variables, strict=True):
                target.assign(source)  # weights, seed-generator states, Adam slots, EMA and step count
        return model


def _dataset(cache, case_ids, stage: str, cfg: dict, seed: int, training: bool):
    t = cfg["train"]
    return SliceDataset(
        cache,
        case_ids,
        stage=stage_number(stage),
        batch_size=t["batch_size"],
        augment=cfg["augment"] if training and cfg["augment"]["enabled"] else None,
        shuffle=training,
        seed=seed,
        steps_per_epoch=t["steps_per_epoch"] if training else 0,
        foreground_fraction=t["lesion_foreground_fraction"] if training and stage == "lesion" else 0.0,
        max_slices=0 if training else t.get("validation_slices", 0),  # runs made before the key: all
        workers=2 if training else 1,  # a prefetch thread keeps augmentation off the critical path
    )


def train_stage(cache, stage: str, train_ids: list[int], val_ids: list[int], cfg: dict, seed: int, verbose: int = 2,
                models: CompiledModels | None = None):
    """Train one stage from scratch; return the model and its per-epoch history.

    Parameters
    ----------
    cache : liverlib.data.cache.SliceCache
    stage : {"liver", "lesion"}
    train_ids, val_ids : list of int
        Scans to fit on and scans to validate on (disjoint).
    cfg : dict
        The run's resolved config.
    seed : int
    verbose : int
        Keras verbosity; 2 prints one line per epoch (headless runs).
    models : CompiledModels, optional
        Networks already compiled by earlier folds, to reuse (the same result, no new trace).
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if set(train_ids) & set(val_ids):
        raise ValueError("training and validation scans overlap")
    cfg = stage_config(cfg, stage)  # the lesion network may differ (lesion_stage section)
    set_seed(seed)
    with private_layer_seeds(seed):
        model = (models or CompiledModels()).fresh(cfg)
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


def train_fold(run_dir: str | Path, fold: dict, cfg: dict, cache, stages=STAGES, verbose: int = 2,
               models: CompiledModels | None = None) -> pd.DataFrame:
    """Train the requested stages of one fold, skipping those already complete.

    Parameters
    ----------
    run_dir : str or Path
    fold : dict
        One entry of ``splits.json``: ``fold``, ``train``, ``val``, ``test``.
    cfg : dict
    cache : liverlib.data.cache.SliceCache
    stages : sequence of {"liver", "lesion"}
    verbose : int
    models : CompiledModels, optional
        Reuse the networks compiled for earlier folds (see :class:`CompiledModels`).

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
        model, table = train_stage(cache, stage, fit_ids, val_ids, cfg, stage_seed(cfg["seed"], fold["fold"], stage), verbose,
                                   models)
        with atomic_path(model_dir / f"{stage}.keras") as tmp:
            model.save(tmp)
        history = read_history(model_dir)
        history = pd.concat([history[history["stage"] != stage], table], ignore_index=True)
        with atomic_path(model_dir / "history.csv") as tmp:
            history.to_csv(tmp, index=False)
    return read_history(model_dir)


def run_stage(run_dir: str | Path, stage: str, which: str | int | list[int] = "all", verbose: int = 2):
    """Train one stage for the selected folds of a run, building or reusing the slice cache.

    This is what notebooks 04 (liver) and 05 (lesion) call. The folds train
    one after another in this process, or as tasks of a Dask cluster when the
    run's ``executor.kind`` is ``dask`` (:mod:`liverlib.inference.executors`);
    the models are the same either way.

    Returns
    -------
    cache : liverlib.data.cache.SliceCache
    history : pandas.DataFrame
        Every selected fold's history, with a ``fold`` column.
    """
    from liverlib.inference import executors  # light; Dask itself only for kind "dask"

    cfg = load_run(run_dir)
    run = RunFolder(Path(run_dir))
    cache = open_cache(cfg, progress=bool(verbose))  # built here, once, before any worker reads it
    selected = select_folds(read_splits(run.splits), which)
    if executors.uses_dask(cfg):
        todo = [fold["fold"] for fold in selected if not stage_complete(run.model_dir(fold["fold"]), stage)]
        with executors.dask_client(cfg) as client:
            futures = [executors.submit(client, train_fold_task, str(run.root), k, stage,
                                        name=f"train-{stage}-fold-{k}", cfg=cfg, training=True) for k in todo]
            for k in executors.results(futures):
                if verbose:
                    print(f"fold {k} {stage}: trained by a Dask worker", flush=True)
    else:
        models = CompiledModels()
        for fold in selected:
            train_fold(run_dir, fold, cfg, cache, stages=(stage,), verbose=verbose, models=models)
    tables = [read_history(run.model_dir(fold["fold"])).assign(fold=fold["fold"]) for fold in selected]
    return cache, pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


_WORKER_MODELS = CompiledModels()  # a Dask worker's compiled networks, reused by the folds it trains


def train_fold_task(run_dir: str, fold: int, stage: str) -> int:
    """One fold's stage, as a Dask task: everything it needs is read from the run folder.

    Returns the fold's number once its model and history are written.
    """
    cfg = load_run(run_dir)
    entry = select_folds(read_splits(RunFolder(Path(run_dir)).splits), fold)[0]
    train_fold(run_dir, entry, cfg, open_cache(cfg, progress=False), stages=(stage,), verbose=0, models=_WORKER_MODELS)
    return fold


def sample_batch(cache, stage: str, case_ids: list[int], cfg: dict, seed: int = 0):
    """One augmented training batch, as the network sees it (for Fig. 6)."""
    data = _dataset(cache, case_ids, stage, stage_config(cfg, stage), seed, training=True)
    return data[0]
