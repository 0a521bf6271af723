"""liverlib.runfolder: every path of a run and of the cache, as design.md lays them out."""

from __future__ import annotations

from pathlib import Path

import pytest

from liverlib.runfolder import CacheFolder, RunFolder, cache_folder


def test_run_paths_follow_the_documented_layout(tmp_path):
    run = RunFolder(tmp_path)
    rel = lambda p: p.relative_to(tmp_path).as_posix()  # noqa: E731
    assert rel(run.config) == "config.yaml" and rel(run.splits) == "splits.json"
    assert rel(run.status) == "notebooks/status.json" and rel(run.kernel_log) == "notebooks/kernel.log"
    assert rel(run.model_file(3, "lesion")) == "models/fold-3/lesion.keras"
    assert rel(run.history(3)) == "models/fold-3/history.csv"
    assert rel(run.postprocessing(3)) == "models/fold-3/postprocessing.json"
    assert rel(run.prediction(12, 0)) == "predictions/before-crf/segmentation-12.nii.gz"
    assert rel(run.prediction(12, 1)) == "predictions/after-crf/segmentation-12.nii.gz"
    assert rel(run.timing) == "predictions/timing.csv" and rel(run.metrics) == "tables/metrics.csv"
    with pytest.raises(ValueError, match="stage must be one of"):
        run.model_file(0, "kidney")


def test_trained_folds_are_the_fold_folders_only(tmp_path):
    run = RunFolder(tmp_path)
    assert run.trained_folds() == []
    for name in ("fold-10", "fold-2", "fold-x", "notes"):
        (tmp_path / "models" / name).mkdir(parents=True)
    (tmp_path / "models" / "fold-7").touch()  # a file, not a fold
    assert run.trained_folds() == [2, 10]


def test_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LIVERLIB_CACHE", str(tmp_path / "c"))
    cache = cache_folder()
    assert cache == CacheFolder((tmp_path / "c").resolve())
    assert cache.slices == cache.root / "slices"
    assert cache.phantom_cohort(cases=40, seed=7, size=256, version=2) == cache.root / "phantoms" / "v2-seed7-n40-s256"
    monkeypatch.delenv("LIVERLIB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_folder().root == Path(tmp_path / "xdg" / "liverlib").resolve()
