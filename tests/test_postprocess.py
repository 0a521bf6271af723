"""The lesion postprocessing each fold chooses on its validation scans."""

from __future__ import annotations

import json

import numpy as np
import pytest

from liverlib.inference import postprocess
from liverlib.inference.postprocess import choose_min_lesion_ml, remove_small_lesions

SPACING = (10.0, 10.0, 10.0)  # 1 mL voxels: sizes in mL are voxel counts


def two_lesions() -> np.ndarray:
    """A liver row with a 3-voxel (3 mL) and a 1-voxel (1 mL) lesion."""
    labels = np.zeros((1, 3, 10), np.uint8)
    labels[0, 1, 1:9] = 1
    labels[0, 1, 1:4] = 2
    labels[0, 1, 6] = 2
    return labels


def test_remove_small_lesions_relabels_them_liver():
    labels = two_lesions()
    out = remove_small_lesions(labels, SPACING, min_ml=2.0)
    expected = labels.copy()
    expected[0, 1, 6] = 1
    np.testing.assert_array_equal(out, expected)
    assert labels[0, 1, 6] == 2  # the input is not modified
    np.testing.assert_array_equal(remove_small_lesions(labels, SPACING, min_ml=3.0), expected)  # 3 mL is kept
    assert (remove_small_lesions(labels, SPACING, min_ml=3.5) == 2).sum() == 0
    assert remove_small_lesions(labels, SPACING, 0.0) is labels
    with pytest.raises(ValueError, match="min_ml"):
        remove_small_lesions(labels, SPACING, -1.0)


def test_lesion_components_are_26_connected():
    labels = np.zeros((2, 2, 2), np.uint8)
    labels[0, 0, 0] = labels[1, 1, 1] = 2  # corner neighbours: one 2 mL lesion
    assert (remove_small_lesions(labels, SPACING, 2.0) == 2).sum() == 2


def test_choose_min_lesion_ml_maximizes_the_mean_dice_and_prefers_small():
    ref = two_lesions()
    ref[0, 1, 6] = 1  # the reference has only the large lesion
    lesion_free = np.zeros_like(ref)
    lesion_free[0, 1, 1:9] = 1
    fp = lesion_free.copy()
    fp[0, 1, 5] = 2  # a 1 mL false positive on a lesion-free scan
    scans = [(two_lesions(), ref, SPACING), (fp, lesion_free, SPACING)]
    best, scores = choose_min_lesion_ml(scans, [0.0, 2.0, 3.0, 5.0])
    # 0: Dice 2*3/(4+3) and 0 -> mean 3/7; 2 and 3: both scans perfect -> 1; 5: 0 and 1 -> 0.5
    assert scores == pytest.approx({"0.0": 3 / 7, "2.0": 1.0, "3.0": 1.0, "5.0": 0.5})
    assert best == 2.0  # the tie goes to the smaller candidate
    assert choose_min_lesion_ml([], [0.5, 0.1])[0] == 0.1
    with pytest.raises(ValueError, match="no candidate"):
        choose_min_lesion_ml(scans, [])


def test_choice_is_recorded_per_fold(tmp_path):
    assert postprocess.read_min_lesion_ml(tmp_path, 3) is None
    path = postprocess.write_choice(tmp_path, 3, 0.2, {"0.0": 0.5, "0.2": 0.75}, [4, 7])
    assert path == tmp_path / "models" / "fold-3" / "postprocessing.json"
    assert postprocess.read_min_lesion_ml(tmp_path, 3) == 0.2
    assert json.loads(path.read_text())["validation_cases"] == [4, 7]
    table = postprocess.choices(tmp_path, [{"fold": 3}, {"fold": 4}])  # fold 4 has not chosen
    assert table.to_dict("records") == [{"fold": 3, "validation scans": "4, 7", "min lesion mL": 0.2,
                                         "Dice, min 0.0 mL": 0.5, "Dice, min 0.2 mL": 0.75}]
