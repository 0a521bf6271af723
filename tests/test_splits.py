"""Patient-level k-fold splits."""

from __future__ import annotations

import numpy as np
import pytest

from liverlib.data.splits import kfold_splits, read_splits, write_splits


def test_lits_sized_splits():
    folds = kfold_splits(list(range(130)), folds=10, seed=1)
    assert len(folds) == 10
    tested = [c for f in folds for c in f["test"]]
    assert sorted(tested) == list(range(130))  # every scan tested exactly once
    for f in folds:
        assert len(f["test"]) == 13 and len(f["train"]) == 117
        assert not set(f["train"]) & set(f["test"])  # split by scan
        assert set(f["train"]) | set(f["test"]) == set(range(130))


def test_validation_is_taken_from_training_scans():
    folds = kfold_splits(list(range(20)), folds=10, seed=3, validation_fraction=0.1)
    for f in folds:
        assert f["val"] and set(f["val"]) <= set(f["train"])
        assert not set(f["val"]) & set(f["test"])
    # Validation rotates: with 2 scans per chunk and 10 % of 18, fold k validates on fold k+1's test scans.
    for k, f in enumerate(folds):
        assert f["val"] == folds[(k + 1) % 10]["test"]
    lits = kfold_splits(list(range(130)), folds=10, seed=0, validation_fraction=0.1)
    times_validated = np.bincount([c for f in lits for c in f["val"]], minlength=130)
    assert [len(f["val"]) for f in lits] == [12] * 10 and times_validated.max() == 1


def test_seeded_and_uneven():
    ids = [3, 8, 15, 21, 22, 40, 41, 50, 77, 90, 91]
    assert kfold_splits(ids, 10, seed=4) == kfold_splits(ids, 10, seed=4)
    assert kfold_splits(ids, 10, seed=4) != kfold_splits(ids, 10, seed=5)
    sizes = sorted(len(f["test"]) for f in kfold_splits(ids, 10, seed=4))
    assert sizes == [1] * 9 + [2]


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least 10 cases"):
        kfold_splits(list(range(5)), folds=10)
    with pytest.raises(ValueError, match="unique"):
        kfold_splits([1, 1, 2], folds=2)


def test_json_round_trip(tmp_path):
    folds = kfold_splits(list(range(12)), folds=3, seed=0)
    path = write_splits(tmp_path / "splits.json", folds)
    assert read_splits(path) == folds
    assert path.read_text().startswith('{\n  "folds": [')
