"""The remaining-time estimate that `liverlib run` prints (liverlib.progress)."""

from __future__ import annotations

import json
import time

import pytest

from liverlib.config import apply_overrides, resolve
from liverlib.progress import ProgressTicker, notebook_progress, reference_seconds, remaining_seconds
from liverlib.runfolder import RunFolder
from liverlib.runner import NOTEBOOKS


def test_remaining_time_is_the_reference_scaled_by_this_runs_pace():
    ref = {"a": 10.0, "b": 100.0, "c": 50.0}
    # Nothing timed yet: the reference as it is.
    assert remaining_seconds(ref, {}, "a", 0.0, None) == pytest.approx(160.0)
    # "a" took 20 s against 10: pace 2, so b and c are expected to take 300 s.
    assert remaining_seconds(ref, {"a": 20.0}, None, 0.0, None) == pytest.approx(300.0)
    # Half of "b" done in 40 s more: pace (20 + 40) / (10 + 50) = 1; 50 s of b and 50 of c left.
    assert remaining_seconds(ref, {"a": 20.0}, "b", 40.0, 0.5) == pytest.approx(100.0)
    # An unknown share counts as nothing done: the time spent only slows the pace.
    assert remaining_seconds(ref, {"a": 10.0}, "b", 10.0, None) == pytest.approx(2.0 * 150.0)
    assert remaining_seconds({}, {"a": 1.0}, "b", 1.0, 0.5) is None


def test_the_default_profile_has_a_reference_run_and_other_data_has_none():
    cfg = resolve("default")
    reference = reference_seconds(cfg)
    assert set(reference) == set(NOTEBOOKS) and all(s > 0 for s in reference.values())
    assert reference_seconds(apply_overrides(cfg, {"data.dir": "/data/LiTS"})) == {}
    assert reference_seconds(apply_overrides(cfg, {"data.phantom_cases": 100})) == {}
    assert reference_seconds(resolve("paper")) == {}


def _run_with_two_folds(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.root.mkdir()
    folds = [{"fold": 0, "train": [2], "val": [], "test": [0, 1]}, {"fold": 1, "train": [0, 1], "val": [], "test": [2]}]
    run.splits.write_text(json.dumps({"folds": folds}))
    return run


def test_notebook_progress_counts_trained_folds_and_predicted_cases(tmp_path):
    run = _run_with_two_folds(tmp_path)
    assert notebook_progress(run.root, "04_liver_training") == (0, 2)
    run.model_file(1, "liver").parent.mkdir(parents=True)
    run.model_file(1, "liver").write_bytes(b"")
    assert notebook_progress(run.root, "04_liver_training") == (1, 2)
    assert notebook_progress(run.root, "05_lesion_training") == (0, 2)
    run.prediction(2, 1).parent.mkdir(parents=True)
    run.prediction(2, 1).write_bytes(b"")
    run.prediction(0, 0).parent.mkdir(parents=True)
    run.prediction(0, 0).write_bytes(b"")  # before the CRF only: not finished
    assert notebook_progress(run.root, "06_crf") == (1, 3)
    assert notebook_progress(run.root, "07_evaluation") is None


def test_ticker_prints_the_line_when_a_notebook_starts_and_then_every_interval(tmp_path):
    run = _run_with_two_folds(tmp_path)
    lines = []
    cfg = resolve("default")
    ticker = ProgressTicker(run.root, cfg, ["04_liver_training", "05_lesion_training"], interval=0.05, log=lines.append)
    assert set(ticker.reference) == {"04_liver_training", "05_lesion_training"}  # only the notebooks still to run
    ticker.start("04_liver_training")
    time.sleep(0.3)
    ticker.finish("04_liver_training", 100.0)
    count = len(lines)
    time.sleep(0.15)
    assert len(lines) == count >= 3  # stopped with the notebook
    assert lines[0].startswith("[04_liver_training] 0/2 folds;")
    ticker.start("05_lesion_training")
    ticker.stop()
    pace = 100.0 / ticker.reference["04_liver_training"]
    expected = pace * ticker.reference["05_lesion_training"] / 60
    assert lines[-1] == f"[05_lesion_training] 0/2 folds; about {expected:.0f} min left in the run"
    # Without a reference, the notebook's own pace: half the folds done -> as long again.
    own = ProgressTicker(run.root, resolve("paper"), ["04_liver_training"], interval=60, log=lines.append)
    run.model_file(0, "liver").parent.mkdir(parents=True)
    run.model_file(0, "liver").write_bytes(b"")
    own.start("04_liver_training")
    own.stop()
    assert lines[-1] == "[04_liver_training] 1/2 folds; about 0 min left in this notebook"
