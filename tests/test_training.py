"""Training: a smoke run that really learns, resume, and reproducibility."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from liverlib import config, data
from liverlib.data.cache import build_cache
from liverlib.data.phantoms import make_phantom, write_cohort
from liverlib.data.sources import open_cache
from liverlib.runfolder import init_run, load_run
from liverlib.data.splits import run_splits
from liverlib.training.folds import CompiledModels, stage_complete, train_fold, train_stage
from liverlib.training.screen import screen, screen_summary


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    return write_cohort(tmp_path_factory.mktemp("train") / "phantoms", cases=6, seed=11, size=96, workers=2)[0].parent


@pytest.fixture(scope="module")
def phantom_cache(phantom_dir):
    cfg = config.resolve("smoke")
    cache = build_cache(data.discover(phantom_dir), phantom_dir.parent / "cache", cfg["preprocess"], workers=2, progress=False)
    return cache, cfg


def _dice(model, cache, case_id):
    x, y = cache.load([case_id], 1)
    pred = model.predict(x[..., None] / 255.0, verbose=0)[..., 0] > 0.5
    ref = y > 0
    return 2 * (pred & ref).sum() / (pred.sum() + ref.sum())


def test_liver_stage_learns_and_beats_chance_on_a_held_out_scan(phantom_cache):
    cache, cfg = phantom_cache
    cfg = config.apply_overrides(cfg, {"train.epochs": 3})
    model, history = train_stage(cache, "liver", [0, 1, 2, 3], [4], cfg, seed=3, verbose=0)
    assert history["loss"].iloc[-1] < 0.8 * history["loss"].iloc[0]
    x, y = cache.load([5], 1)
    chance = 2 * (y > 0).mean() / (1 + (y > 0).mean())  # Dice of calling every pixel liver
    assert _dice(model, cache, 5) > max(0.4, 2 * chance)


def test_fold_resumes_and_is_reproducible(phantom_cache, tmp_path):
    cache, cfg = phantom_cache
    cfg = config.apply_overrides(cfg, {"train.epochs": 1, "train.steps_per_epoch": 2})
    fold = {"fold": 0, "train": [0, 1, 2], "val": [2], "test": [5]}
    history = train_fold(tmp_path / "a", fold, cfg, cache, stages=("liver",), verbose=0)
    model_dir = tmp_path / "a" / "models" / "fold-0"
    assert stage_complete(model_dir, "liver") and not stage_complete(model_dir, "lesion")
    stamp = (model_dir / "liver.keras").stat().st_mtime_ns
    again = train_fold(tmp_path / "a", fold, cfg, cache, stages=("liver",), verbose=0)
    assert (model_dir / "liver.keras").stat().st_mtime_ns == stamp  # complete stage skipped
    assert again.equals(history)
    other = train_fold(tmp_path / "b", fold, cfg, cache, stages=("liver",), verbose=0)
    np.testing.assert_array_equal(other["loss"].to_numpy(), history["loss"].to_numpy())
    assert not list(model_dir.glob(".*tmp*"))


def test_reused_network_trains_exactly_as_a_new_one(phantom_cache):
    cache, cfg = phantom_cache
    # The lesion stage: dropout off, EMA on, mixed pooling draws; every state must be reset.
    cfg = config.apply_overrides(cfg, {"train.epochs": 2, "train.steps_per_epoch": 2})
    new, _ = train_stage(cache, "lesion", [0, 1, 2], [3], cfg, seed=5, verbose=0)
    expected = [w.copy() for w in new.get_weights()]
    models = CompiledModels()
    first, _ = train_stage(cache, "lesion", [2, 3, 4], [0], cfg, seed=9, verbose=0, models=models)
    again, _ = train_stage(cache, "lesion", [0, 1, 2], [3], cfg, seed=5, verbose=0, models=models)
    assert again is first  # the same compiled network, traced once
    for got, want in zip(again.get_weights(), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    other = config.apply_overrides(cfg, {"model.base_filters": 4})
    assert train_stage(cache, "lesion", [0, 1], [2], other, seed=5, verbose=0, models=models)[0] is not first


def test_overlapping_scans_are_refused(phantom_cache, tmp_path):
    cache, cfg = phantom_cache
    with pytest.raises(ValueError, match="overlap"):
        train_fold(tmp_path, {"fold": 0, "train": [0, 1], "val": [], "test": [1]}, cfg, cache)


def test_lesion_stage_section_changes_only_the_lesion_network(phantom_cache):
    cache, cfg = phantom_cache
    cfg = config.apply_overrides(cfg, {"train.epochs": 1, "train.steps_per_epoch": 1, "model.output_prior": 0.5,
                                       "lesion_stage.model.output_prior": 0.01, "lesion_stage.train.epochs": 2})
    liver, liver_history = train_stage(cache, "liver", [0, 1], [2], cfg, seed=3, verbose=0)
    lesion, lesion_history = train_stage(cache, "lesion", [0, 1], [2], cfg, seed=3, verbose=0)
    assert (len(liver_history), len(lesion_history)) == (1, 2)
    # One Adam step moves the bias by ~learning_rate from its start: 0 for the liver, logit(0.01) for the lesion.
    start = {"liver": 0.0, "lesion": np.log(0.01 / 0.99)}
    for name, model in (("liver", liver), ("lesion", lesion)):
        bias = model.get_layer("output").get_weights()[1]
        assert abs(float(bias[0]) - start[name]) < 0.1, name


def test_screen_scores_each_test_scan_and_leaves_the_run_alone(phantom_dir, tmp_path):
    run = tmp_path / "run"
    init_run(run, "smoke", {"data.dir": str(phantom_dir)})
    folds = run_splits(list(range(6)), folds=6, seed=0, validation_fraction=0.2, path=run / "splits.json")
    # a fold whose test scan is not cropped to the liver (in a crop, calling every pixel liver scores ~0.9)
    fold = next(f["fold"] for f in folds if not make_phantom(f["test"][0], seed=11, size=64, n_slices=12).meta["crop"])
    before = sorted((p.name, p.stat().st_mtime_ns) for p in run.rglob("*"))
    table = screen(run, "liver", fold, ["train.epochs=5"])
    assert sorted((p.name, p.stat().st_mtime_ns) for p in run.rglob("*")) == before  # nothing written
    assert table["case"].tolist() == folds[fold]["test"] and (table["fold"] == fold).all()
    cache = open_cache(load_run(run), progress=False)
    for row in table.itertuples():
        _, y = cache.load([row.case], 1)
        assert row.reference == int(y.sum()) > 0  # the cached liver masks' pixels
        chance = 2 * y.mean() / (1 + y.mean())  # Dice of calling every pixel liver
        assert row.dice > max(0.3, 2 * chance)  # it learns in 150 steps


def test_screen_summary_pools_pixels():
    table = pd.DataFrame({"fold": [0, 0, 1], "case": [3, 4, 5], "reference": [10, 0, 30], "predicted": [10, 4, 20],
                          "intersection": [5, 0, 20], "dice": [0.5, 0.0, 0.8]})
    summary = screen_summary(table)
    assert summary["pooled_dice"] == pytest.approx(2 * 25 / (34 + 40))
    assert summary["mean_dice"] == pytest.approx(1.3 / 3)
    assert summary["false_positive_px_without_foreground"] == 4 and summary["scans"] == 3


def test_seeded_layers_ignore_other_threads_draws_on_python_random():
    """Keras seeds dropout from Python's global random; a Dask worker's threads draw from it too."""
    import random

    import keras

    from liverlib.training.folds import private_layer_seeds, set_seed

    def dropout_state(interleave: bool):
        set_seed(11)
        with private_layer_seeds(11):
            if interleave:
                random.random()  # what a heartbeat thread may do between the seeding and the build
            layer = keras.layers.Dropout(0.5)
        return np.asarray(layer.seed_generator.state), random.random()

    (alone, after), (interleaved, _) = dropout_state(False), dropout_state(True)
    np.testing.assert_array_equal(alone, interleaved)
    # the seeds and the global stream after the block are those of a plain build
    keras.utils.set_random_seed(11)
    plain = np.asarray(keras.layers.Dropout(0.5).seed_generator.state)
    np.testing.assert_array_equal(alone, plain)
    assert after == random.random()  # the global stream goes on as if the build had drawn from it
