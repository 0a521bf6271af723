"""LiTS metrics against answers computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from liverlib.evaluation.detection import case_metrics, lesion_detection
from liverlib.evaluation.metrics import (
    CONVENTIONS,
    assd,
    dice,
    dice_counts,
    global_dice,
    msd,
    rvd,
    segmentation_scores,
    surface_distances,
    voe,
)


def mask(shape, *voxels_or_slices) -> np.ndarray:
    out = np.zeros(shape, bool)
    for index in voxels_or_slices:
        out[index] = True
    return out


# --------------------------------------------------------------------------- overlap


def test_overlap_metrics_on_a_4x4_image():
    ref = mask((4, 4), (0, 0), (0, 1), (0, 2))
    pred = mask((4, 4), (0, 1), (0, 2), (0, 3))
    # |X∩Y| = 2, |X| = |Y| = 3, |X∪Y| = 4
    assert dice(pred, ref) == pytest.approx(2 * 2 / (3 + 3))
    assert voe(pred, ref) == pytest.approx(1 - 2 / 4)
    assert rvd(pred, ref) == 0.0
    assert dice_counts(pred, ref) == (2, 3, 3)


def test_rvd_is_signed_prediction_minus_reference():
    ref = mask((4, 4), np.s_[1:3, 1:3])  # 4 pixels
    under = mask((4, 4), np.s_[1:3, 1])  # 2 pixels inside ref
    over = mask((4, 4), np.s_[1:3, 1:4])  # 6 pixels containing ref
    assert rvd(under, ref) == pytest.approx((2 - 4) / 4)
    assert rvd(over, ref) == pytest.approx((6 - 4) / 4)
    assert dice(over, ref) == pytest.approx(2 * 4 / (6 + 4))
    assert voe(over, ref) == pytest.approx(1 - 4 / 6)
    assert voe(under, ref) == pytest.approx(1 - 2 / 4)


def test_overlap_metrics_in_3d_ignore_spacing():
    ref = mask((4, 4, 4), np.s_[0:2, 0:2, 0:2])  # 8 voxels
    pred = mask((4, 4, 4), np.s_[1:3, 0:2, 0:2])  # shifted by one plane: 4 shared
    for spacing in (None, (3.0, 0.5, 0.5)):
        assert dice(pred, ref, spacing) == pytest.approx(2 * 4 / 16)
        assert voe(pred, ref, spacing) == pytest.approx(1 - 4 / 12)


def test_labels_count_as_inside_when_nonzero():
    ref = np.array([[0, 2, 2], [0, 1, 0]], np.uint8)
    pred = np.array([[1, 1, 0], [0, 0, 0]], np.uint8)
    assert dice(pred, ref) == pytest.approx(2 * 1 / (2 + 3))


# --------------------------------------------------------------------------- surface distances


@pytest.mark.parametrize(
    "shift, expected",
    [
        ((0, 0, 3), 3 * 0.8),  # along columns
        ((2, 0, 0), 2 * 2.5),  # along planes
        ((1, 1, 0), math.hypot(2.5, 0.7)),  # diagonal in (plane, row)
    ],
)
def test_single_voxels_shifted_are_shift_times_spacing_apart(shift, expected):
    spacing = (2.5, 0.7, 0.8)
    ref = mask((6, 6, 8), (1, 2, 2))
    pred = mask((6, 6, 8), (1 + shift[0], 2 + shift[1], 2 + shift[2]))
    assert assd(pred, ref, spacing) == pytest.approx(expected)
    assert msd(pred, ref, spacing) == pytest.approx(expected)


def test_parallel_lines_are_shift_times_spacing_apart():
    spacing = (2.5, 0.7, 0.8)
    ref = mask((5, 4, 9), np.s_[0, 1, 1:8])
    pred = mask((5, 4, 9), np.s_[2, 1, 1:8])  # 2 planes up
    assert assd(pred, ref, spacing) == pytest.approx(5.0)
    assert msd(pred, ref, spacing) == pytest.approx(5.0)
    to_ref, to_pred = surface_distances(pred, ref, spacing)
    assert to_ref.size == to_pred.size == 7  # a line is all surface
    np.testing.assert_allclose(to_ref, 5.0)


def test_assd_averages_and_msd_takes_the_maximum():
    # ref: one voxel; pred: that voxel plus one 3 columns away (2 mm each).
    # pred->ref distances {0, 6}, ref->pred {0}: ASSD = 6/3, MSD = 6.
    ref = mask((1, 1, 6), (0, 0, 0))
    pred = mask((1, 1, 6), (0, 0, 0), (0, 0, 3))
    spacing = (1.0, 1.0, 2.0)
    assert assd(pred, ref, spacing) == pytest.approx(2.0)
    assert msd(pred, ref, spacing) == pytest.approx(6.0)
    assert assd(ref, pred, spacing) == pytest.approx(2.0)  # symmetric


def test_identical_masks_are_zero_apart():
    rng = np.random.default_rng(0)
    m = rng.random((6, 7, 8)) > 0.5
    assert assd(m, m, (2.0, 1.0, 1.0)) == 0.0
    assert msd(m, m, (2.0, 1.0, 1.0)) == 0.0


def test_surface_uses_the_lits_18_neighbourhood():
    # A 5x5x5 cube without one corner: voxel (1,1,1) then touches the
    # background only through a corner, so it is interior under the LiTS
    # scorer's 18-neighbourhood (97 surface voxels), not under full
    # connectivity (98).
    cube = mask((7, 7, 7), np.s_[1:6, 1:6, 1:6])
    cube[1, 1, 1] = False
    to_ref, _ = surface_distances(cube, cube)
    assert to_ref.size == 5**3 - 3**3 - 1


def test_array_border_counts_as_background():
    full = np.ones((3, 3, 3), bool)
    to_ref, to_pred = surface_distances(full, full)
    assert to_ref.size == to_pred.size == 26  # only the centre is interior


def test_cropping_keeps_far_apart_masks_exact():
    shape, spacing = (10, 20, 30), (1.0, 2.0, 3.0)
    pred = mask(shape, (0, 0, 0))
    ref = mask(shape, (9, 19, 29))
    expected = math.sqrt(9**2 + (19 * 2) ** 2 + (29 * 3) ** 2)
    assert msd(pred, ref, spacing) == pytest.approx(expected)
    assert assd(pred, ref, spacing) == pytest.approx(expected)


# --------------------------------------------------------------------------- empty masks


def test_both_empty_follows_lits():
    empty = np.zeros((3, 4, 5), bool)
    values = [f(empty, empty) for f in (dice, voe, rvd, assd, msd)]
    assert values == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert CONVENTIONS["both_empty"] == dict(zip(("dice", "voe", "rvd", "assd", "msd"), values))


def test_reference_empty():
    empty = np.zeros((3, 4, 5), bool)
    pred = mask((3, 4, 5), np.s_[1, 1:3, 1:3])
    assert dice(pred, empty) == 0.0
    assert voe(pred, empty) == 1.0
    assert math.isnan(rvd(pred, empty))
    assert math.isnan(assd(pred, empty))
    assert math.isnan(msd(pred, empty))
    scores = segmentation_scores(pred, empty)
    assert scores["ref_empty"] and not scores["pred_empty"]
    assert (scores["intersection"], scores["pred_voxels"], scores["ref_voxels"]) == (0, 4, 0)


def test_prediction_empty():
    empty = np.zeros((3, 4, 5), bool)
    ref = mask((3, 4, 5), np.s_[1, 1:3, 1:3])
    assert dice(empty, ref) == 0.0
    assert voe(empty, ref) == 1.0
    assert rvd(empty, ref) == -1.0
    assert math.isnan(assd(empty, ref))
    assert math.isnan(msd(empty, ref))
    assert surface_distances(empty, ref)[0].size == 0


# --------------------------------------------------------------------------- global dice


def test_global_dice_pools_counts_unlike_the_per_case_mean():
    # Case A: one voxel, found exactly (Dice 1). Case B: 9 voxels, missed (Dice 0).
    ref_a = mask((3, 3), (1, 1))
    ref_b = mask((3, 3), np.s_[:, :])
    counts = [dice_counts(ref_a, ref_a), dice_counts(np.zeros((3, 3)), ref_b)]
    assert counts == [(1, 1, 1), (0, 0, 9)]
    per_case = np.mean([dice(ref_a, ref_a), dice(np.zeros((3, 3)), ref_b)])
    assert per_case == pytest.approx(0.5)
    assert global_dice(counts) == pytest.approx(2 * 1 / (1 + 1 + 9))


def test_global_dice_of_all_empty_cases_is_one_and_bad_counts_raise():
    assert global_dice([(0, 0, 0), (0, 0, 0)]) == 1.0
    with pytest.raises(ValueError, match="intersection"):
        global_dice([(5, 2, 9)])


# --------------------------------------------------------------------------- lesion detection


def test_detection_one_found_one_missed_one_false_positive():
    shape = (4, 12, 12)
    ref = mask(shape, np.s_[1:3, 1:4, 1:4], np.s_[1:3, 8:11, 8:11])  # two lesions of 18 voxels
    pred = mask(shape, np.s_[1:3, 1:4, 1:3], np.s_[1:3, 8:10, 1:3])  # 12 of the first; elsewhere
    result = lesion_detection(pred, ref)
    assert (result["tp"], result["fp"], result["fn"]) == (1, 1, 1)  # IoU 12/18 > 0.5
    assert result["precision"] == pytest.approx(0.5)
    assert result["recall"] == pytest.approx(0.5)
    assert (result["ref_lesions"], result["pred_lesions"]) == (2, 2)


def test_detection_needs_iou_strictly_above_the_threshold():
    ref = mask((3, 6, 6), np.s_[1, 1:3, 1:3])  # 4 voxels
    pred = mask((3, 6, 6), np.s_[1, 1:3, 1])  # 2 of them: IoU exactly 0.5
    assert lesion_detection(pred, ref)[("tp")] == 0
    assert lesion_detection(pred, ref, overlap=0.4)["tp"] == 1
    assert lesion_detection(pred, ref, overlap=0.0)["tp"] == 1
    with pytest.raises(ValueError, match="overlap"):
        lesion_detection(pred, ref, overlap=1.0)


def test_detection_merges_as_the_lits_scorer():
    shape = (3, 6, 12)
    # One predicted blob spanning two reference lesions: both are detected.
    ref = mask(shape, np.s_[1, 1:4, 1:4], np.s_[1, 1:4, 5:8])  # 9 + 9 voxels, one column apart
    pred = mask(shape, np.s_[1, 1:4, 1:8])  # 21 voxels: IoU 18/21
    assert {k: lesion_detection(pred, ref)[k] for k in ("tp", "fp", "fn")} == {"tp": 2, "fp": 0, "fn": 0}
    # Two predicted pieces of one reference lesion: one detection, no false positive.
    ref = mask(shape, np.s_[1, 1:4, 1:8])
    pred = mask(shape, np.s_[1, 1:4, 1:4], np.s_[1, 1:4, 5:8])
    assert {k: lesion_detection(pred, ref)[k] for k in ("tp", "fp", "fn")} == {"tp": 1, "fp": 0, "fn": 0}


def test_detection_components_use_full_connectivity():
    ref = mask((3, 3, 3), (0, 0, 0), (1, 1, 1))  # touching at a corner: one lesion
    assert lesion_detection(ref, ref)["ref_lesions"] == 1


def test_detection_without_lesions_has_undefined_rates():
    empty = np.zeros((3, 4, 4), bool)
    result = lesion_detection(empty, empty)
    assert (result["tp"], result["fp"], result["fn"]) == (0, 0, 0)
    assert math.isnan(result["precision"]) and math.isnan(result["recall"])
    only_fp = lesion_detection(mask((3, 4, 4), (1, 1, 1)), empty)
    assert (only_fp["fp"], only_fp["precision"]) == (1, 0.0)
    assert math.isnan(only_fp["recall"])


# --------------------------------------------------------------------------- per case


def test_case_metrics_scores_liver_with_its_lesions():
    ref = np.zeros((3, 6, 6), np.uint8)
    ref[1, 1:5, 1:5] = 1  # 16 voxels of liver...
    ref[1, 2:4, 2:4] = 2  # ...of which 4 are one lesion
    pred = np.where(ref > 0, 1, 0).astype(np.uint8)  # whole liver found, lesion missed
    liver, lesion = case_metrics(pred, ref, spacing=(2.0, 1.0, 1.0))
    assert liver["structure"] == "liver" and lesion["structure"] == "lesion"
    assert liver["dice"] == 1.0 and liver["msd"] == 0.0
    assert (liver["intersection"], liver["pred_voxels"], liver["ref_voxels"]) == (16, 16, 16)
    assert lesion["dice"] == 0.0 and lesion["rvd"] == -1.0 and math.isnan(lesion["assd"])
    assert lesion["pred_empty"] and not lesion["ref_empty"]
    assert (lesion["tp"], lesion["fp"], lesion["fn"]) == (0, 0, 1)
    assert "tp" not in liver


def test_case_metrics_without_lesions_scores_lesion_dice_one():
    labels = np.zeros((3, 5, 5), np.uint8)
    labels[1, 1:4, 1:4] = 1
    lesion = case_metrics(labels, labels)[1]
    assert lesion["dice"] == 1.0 and lesion["ref_empty"] and lesion["pred_empty"]


def test_bad_arguments_raise_helpful_errors():
    with pytest.raises(ValueError, match=r"pred \(3, 4\) and ref \(4, 3\)"):
        dice(np.zeros((3, 4)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="one voxel size per axis"):
        assd(np.ones((2, 2, 2)), np.ones((2, 2, 2)), spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        msd(np.ones((2, 2)), np.ones((2, 2)), spacing=(1.0, 0.0))
    with pytest.raises(ValueError, match=r"\{0, 1, 2\}"):
        case_metrics(np.full((2, 2, 2), 3), np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="same shape"):
        case_metrics(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))
