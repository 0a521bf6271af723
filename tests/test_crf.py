"""The 3D dense CRF (paper step vii): behaviour on small synthetic volumes with known answers."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from support import REAL_CT, REAL_MASK
from scipy import ndimage as ndi

from liverlib.config import defaults, resolve
from liverlib.data import load_image, load_label
from liverlib.inference import crf
from liverlib.inference.crf import crf_refine, pairwise_features
from liverlib.inference.crf_grid import block_mean, plane_factor, upsample
from liverlib.inference.labels import lesions_in_liver, refine_labels

SHAPE = (24, 48, 48)
SPACING = (2.0, 1.0, 1.0)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def ellipsoid(shape=SHAPE, spacing=SPACING, semi_axes_mm=(17.0, 17.0, 14.0), centre_shift=(0, 0, 0)) -> np.ndarray:
    grids = np.indices(shape, dtype=np.float32)
    r2 = sum(
        (((g - (n - 1) / 2 - c) * s) / a) ** 2
        for g, n, s, a, c in zip(grids, shape, spacing, semi_axes_mm, centre_shift)
    )
    return r2 <= 1.0


def noisy_case(seed: int = 0, contrast_hu: float = 60.0, noise_hu: float = 12.0, centre_shift=(0, 0, 0)):
    """A clean ellipsoid, its CT (contrast step + noise), and corrupted probabilities.

    The probabilities are 0.8 inside / 0.2 outside plus Gaussian noise (sd 0.15),
    with 10 % of the voxels flipped (p -> 1 - p): thresholding at 0.5 leaves
    holes inside and speckles outside.
    """
    rng = np.random.default_rng(seed)
    mask = ellipsoid(centre_shift=centre_shift)
    image = np.where(mask, 60.0, 60.0 - contrast_hu) + rng.normal(0.0, noise_hu, SHAPE)
    prob = np.where(mask, 0.8, 0.2) + rng.normal(0.0, 0.15, SHAPE)
    flips = rng.random(SHAPE) < 0.10
    prob[flips] = 1.0 - prob[flips]
    return image.astype(np.float32), np.clip(prob, 0.0, 1.0).astype(np.float32), mask


# ----------------------------------------------------------------------------- refinement


def test_crf_beats_thresholding_on_noisy_probabilities():
    image, prob, mask = noisy_case()
    before = dice(prob >= 0.5, mask)
    labels = crf_refine(image, prob, SPACING)
    after = dice(labels, mask)
    print(f"\nDice thresholded {before:.4f} -> CRF {after:.4f}")
    assert labels.shape == SHAPE and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1}
    assert before < 0.8  # the corruption is real: holes and speckles
    assert after > before + 0.15
    assert after > 0.93


def test_crf_improves_a_simulated_network_output_on_real_ct():
    # The real 3 mm CT and its liver mask; the "network" errs the way a 2-D network does:
    # per-slice over/under-segmentation, a smooth boundary error, and speckles away from the liver edge.
    image, spacing, geometry = load_image(REAL_CT)
    ref = load_label(REAL_MASK, geometry) > 0
    rng = np.random.default_rng(0)
    signed = ndi.distance_transform_edt(ref, sampling=spacing) - ndi.distance_transform_edt(~ref, sampling=spacing)
    offset = rng.normal(0.0, 3.0, ref.shape[0])[:, None, None]
    smooth = ndi.gaussian_filter(rng.normal(0.0, 1.0, ref.shape), 3)
    logit = (signed + offset + smooth * 3.0 / smooth.std()) / 2.0
    speckle = ndi.binary_dilation(rng.random(ref.shape) < 0.002) & (np.abs(signed) > 6)
    logit[speckle] *= -0.7
    prob = (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    before = dice(prob >= 0.5, ref)
    after = dice(crf_refine(image, prob, spacing), ref)
    print(f"\nreal CT liver Dice thresholded {before:.4f} -> CRF {after:.4f}")
    assert after > before + 0.015


def test_appearance_kernel_uses_the_contrast_edge():
    # Same probabilities, image with vs without the contrast step: the step must help.
    image, prob, mask = noisy_case()
    flat, _, _ = noisy_case(contrast_hu=0.0)
    with_edge = dice(crf_refine(image, prob, SPACING), mask)
    without_edge = dice(crf_refine(flat, prob, SPACING), mask)
    assert with_edge > without_edge + 0.02


def test_result_is_deterministic():
    image, prob, _ = noisy_case(seed=3)
    first = crf_refine(image, prob, SPACING, iterations=3)
    second = crf_refine(image.copy(), prob.copy(), SPACING, iterations=3)
    np.testing.assert_array_equal(first, second)


def test_without_pairwise_terms_the_crf_is_the_threshold():
    # The unary prior log(t), log(1 - t) makes the CRF agree with prob >= t when nothing smooths.
    rng = np.random.default_rng(1)
    prob = rng.random(SHAPE).astype(np.float32)
    image = np.zeros(SHAPE, np.float32)
    for threshold in (0.5, 0.3):
        keep = np.abs(prob - threshold) > 1e-3  # float rounding at the threshold itself
        labels = crf_refine(image, prob, SPACING, pos_weight=0, bilateral_weight=0, threshold=threshold)
        np.testing.assert_array_equal(labels[keep], (prob >= threshold)[keep])


def test_multiclass_probabilities():
    image, prob, mask = noisy_case(seed=2)
    probs = np.stack([1.0 - prob, prob * 0.5, prob * 0.5 + 0.0])  # class 2 duplicates class 1
    probs[2] += 0.01 * mask  # ... and wins a tie-break inside the mask
    probs /= probs.sum(axis=0, keepdims=True)
    labels, q = crf_refine(image, probs, SPACING, return_prob=True)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2}
    assert q.shape == probs.shape
    np.testing.assert_allclose(q.sum(axis=0), 1.0, atol=1e-4)
    assert dice(labels > 0, mask) > dice(np.argmax(probs, axis=0) > 0, mask) + 0.1


# ----------------------------------------------------------------------------- spacing


def test_features_are_scaled_by_spacing_and_sigma():
    shape, spacing = (3, 4, 5), (2.5, 0.8, 0.7)
    image = np.arange(60, dtype=np.float32).reshape(shape) * 3.0
    feats = pairwise_features(shape, spacing, 5.0, image=image, sigma_hu=12.0)
    assert feats.shape == (4, 60) and feats.dtype == np.float32 and feats.flags.c_contiguous
    grid = feats.reshape((4,) + shape)
    index = np.indices(shape)
    for axis in range(3):
        np.testing.assert_allclose(grid[axis], index[axis] * spacing[axis] / 5.0, rtol=1e-6)
    np.testing.assert_allclose(grid[3], image / 12.0, rtol=1e-6)
    # Voxel order matches the flattened (C-order) probabilities the unary uses.
    np.testing.assert_allclose(feats[3], image.ravel() / 12.0, rtol=1e-6)
    spatial_only = pairwise_features(shape, spacing, 2.0)
    assert spatial_only.shape == (3, 60)
    np.testing.assert_allclose(np.diff(spatial_only.reshape((3,) + shape)[0], axis=0), 2.5 / 2.0)


def test_slice_spacing_decides_whether_a_thin_slab_survives():
    # A one-plane disk of weak foreground (p = 0.7) in weak background (p = 0.3).
    # With 1 mm planes its neighbours across planes, all background, lie within
    # the 3 mm kernel and erase it; with 10 mm planes they are 3.3 sigma away and
    # the disk, supported in-plane, stays.
    shape = (21, 32, 32)
    z, y, x = np.indices(shape)
    slab = (z == 10) & ((y - 16) ** 2 + (x - 16) ** 2 <= 12**2)
    prob = np.where(slab, 0.7, 0.3).astype(np.float32)
    image = np.zeros(shape, np.float32)
    kwargs = dict(pos_sigma_mm=3.0, pos_weight=3.0, bilateral_weight=0.0)
    isotropic = crf_refine(image, prob, (1.0, 1.0, 1.0), **kwargs)
    thick = crf_refine(image, prob, (10.0, 1.0, 1.0), **kwargs)
    assert isotropic[slab].mean() < 0.05
    assert thick[slab].mean() > 0.95
    assert not thick[~slab].any()


# ----------------------------------------------------------------------------- ROI and edge cases


def test_no_probability_above_threshold_gives_zeros():
    image = np.zeros(SHAPE, np.float32)
    for prob in (np.zeros(SHAPE, np.float32), np.full(SHAPE, 0.3, np.float32)):
        labels, q = crf_refine(image, prob, SPACING, return_prob=True)
        assert labels.shape == SHAPE and labels.dtype == np.uint8 and not labels.any()
        np.testing.assert_array_equal(q, prob)


def test_outside_the_roi_the_result_is_the_thresholded_probability():
    image, prob, mask = noisy_case(seed=4)
    roi = (slice(4, 20), slice(8, 40), slice(10, 38))
    labels = crf_refine(image, prob, SPACING, roi=roi)
    outside = np.ones(SHAPE, bool)
    outside[roi] = False
    np.testing.assert_array_equal(labels[outside], (prob >= 0.5)[outside])
    inside_changed = (labels[roi] != (prob[roi] >= 0.5)).mean()
    assert inside_changed > 0.05  # the CRF did run inside


def test_automatic_roi_is_the_padded_box_of_possible_foreground(monkeypatch):
    mask = np.zeros(SHAPE, bool)
    mask[8:16, 16:30, 2:12] = True
    image = np.where(mask, 60.0, 0.0).astype(np.float32)
    prob = np.where(mask, 0.9, 0.01).astype(np.float32)
    prob[20, 40, 40] = 0.06  # above roi_threshold: widens the box
    seen = []
    mean_field = crf._mean_field
    def recording(image, *args, **kwargs):
        seen.append(image.shape)
        return mean_field(image, *args, **kwargs)

    monkeypatch.setattr(crf, "_mean_field", recording)
    labels = crf_refine(image, prob, SPACING, roi_margin_mm=4.0)
    assert seen == [(23 - 6, 45 - 12, 45 - 0)]  # planes 6..22, rows 12..44, columns 0..44
    assert dice(labels, mask) > 0.95
    seen.clear()
    crf_refine(image, prob, SPACING, roi_margin_mm=4.0, roi_threshold=0.1)
    assert seen == [(12, 22, 16)]


def test_large_boxes_are_downsampled_in_plane():
    image, prob, mask = noisy_case(seed=5, centre_shift=(0, 4, -5))
    full = crf_refine(image, prob, SPACING, roi=(slice(None),) * 3)
    coarse, q = crf_refine(
        image, prob, SPACING, roi=(slice(None),) * 3, max_voxels=prob.size // 3, return_prob=True
    )
    assert coarse.shape == SHAPE and q.shape == SHAPE
    assert dice(coarse, mask) > dice(prob >= 0.5, mask) + 0.15
    assert dice(coarse, mask) > dice(full, mask) - 0.02  # 2 mm in-plane grid, as good here
    # The coarse marginals are interpolated back in place: no shift or flip.
    centroid = [np.mean(np.nonzero(coarse)[axis]) for axis in (1, 2)]
    np.testing.assert_allclose(centroid, [23.5 + 4, 23.5 - 5], atol=0.25)
    # Too many planes for the budget even at one voxel per plane: a clear error, not a hang.
    with pytest.raises(ValueError, match="max_voxels"):
        crf_refine(image, prob, SPACING, roi=(slice(None),) * 3, max_voxels=SHAPE[0] - 1)


def mean_field_grids(monkeypatch) -> list:
    """The (shape, spacing) of every grid the CRF's mean field runs on from now on in this test."""
    seen = []
    original = crf._mean_field
    monkeypatch.setattr(crf, "_mean_field", lambda image, probs, spacing, *a: seen.append((image.shape, spacing))
                        or original(image, probs, spacing, *a))  # fmt: skip
    return seen


def test_grid_mm_runs_the_crf_on_a_coarser_in_plane_grid(monkeypatch):
    # 0.5 mm in-plane: grid_mm=2 block-averages 4 x 4 voxels (2 mm), 16 times fewer voxels.
    image, prob, mask = noisy_case(seed=8, centre_shift=(0, 3, -2))
    fine = (2.0, 0.5, 0.5)
    seen = mean_field_grids(monkeypatch)
    box = (slice(None),) * 3
    full = crf_refine(image, prob, fine, roi=box)
    coarse, q = crf_refine(image, prob, fine, roi=box, grid_mm=2.0, return_prob=True)
    assert seen == [(SHAPE, fine), ((SHAPE[0], 12, 12), (2.0, 2.0, 2.0))]
    assert coarse.shape == SHAPE and q.shape == SHAPE
    assert dice(coarse, full) > 0.9 and dice(coarse, mask) > dice(prob >= 0.5, mask) + 0.1
    np.testing.assert_array_equal(coarse, q >= 0.5)  # the labels are the interpolated marginal's
    # A grid finer than the scan changes nothing; a negative one is an error.
    np.testing.assert_array_equal(crf_refine(image, prob, fine, roi=box, grid_mm=0.9), full)
    with pytest.raises(ValueError, match="grid_mm"):
        crf_refine(image, prob, fine, grid_mm=-1.0)
    # refine_labels passes the liver and the lesion grids to their own CRFs.
    image, liver_prob, lesion_prob, *_ = lesion_case(seed=4)
    seen.clear()
    refine_labels(image, liver_prob, lesion_prob, fine, grid_mm=2.0, lesion_grid_mm=1.0)
    assert [spacing for _, spacing in seen] == [(2.0, 2.0, 2.0), (2.0, 1.0, 1.0)]


def test_block_mean_and_upsample_through_the_planes():
    # 5 planes, 2 planes a block: (0, 1), (2, 3), (4, 4 edge-padded); back by linear interpolation
    # between block centres, held at the ends. Voxel [0, 0] of plane z is 4 z.
    a = np.arange(20, dtype=np.float32).reshape(5, 2, 2)
    coarse = block_mean(a, 1, 2)
    np.testing.assert_array_equal(coarse[:, 0, 0], [2.0, 10.0, 16.0])
    np.testing.assert_array_equal(upsample(coarse, 1, a.shape, 2)[:, 0, 0], [2.0, 4.0, 8.0, 11.5, 14.5])
    # in-plane and through-plane together: one 2 x 2 x 2 block is the mean of its 8 voxels
    np.testing.assert_array_equal(block_mean(a[:4], 2, 2)[:, 0, 0], [a[:2].mean(), a[2:4].mean()])
    assert plane_factor((0.7, 0.8, 0.8), 3.0) == 4 and plane_factor((2.5, 0.8, 0.8), 3.0) == 1
    assert plane_factor((0.7, 0.8, 0.8), 0.0) == 1 and plane_factor((0.8, 0.8), 3.0) == 1  # off; 2-D


def test_grid_z_mm_runs_the_liver_crf_on_fewer_planes(monkeypatch):
    # 0.5 mm planes: grid_z_mm=1.5 averages 3 planes (1.5 mm), 3 times fewer voxels.
    image, prob, mask = noisy_case(seed=8, centre_shift=(0, 3, -2))
    thin = (0.5, 1.0, 1.0)
    seen = mean_field_grids(monkeypatch)
    box = (slice(None),) * 3
    full = crf_refine(image, prob, thin, roi=box)
    coarse, q = crf_refine(image, prob, thin, roi=box, grid_z_mm=1.5, return_prob=True)
    assert seen == [(SHAPE, thin), ((SHAPE[0] // 3, 48, 48), (1.5, 1.0, 1.0))]
    assert coarse.shape == SHAPE and q.shape == SHAPE
    assert dice(coarse, full) > 0.9 and dice(coarse, mask) > dice(prob >= 0.5, mask) + 0.1
    np.testing.assert_array_equal(coarse, q >= 0.5)
    np.testing.assert_array_equal(crf_refine(image, prob, thin, roi=box, grid_z_mm=0.9), full)
    with pytest.raises(ValueError, match="grid_z_mm"):
        crf_refine(image, prob, thin, grid_z_mm=-1.0)
    # refine_labels coarsens the liver CRF's planes only: the lesion CRF keeps every plane.
    image, liver_prob, lesion_prob, *_ = lesion_case(seed=4)
    seen.clear()
    refine_labels(image, liver_prob, lesion_prob, thin, grid_mm=0.0, lesion_grid_mm=0.0, grid_z_mm=1.5)
    assert [spacing for _, spacing in seen] == [(1.5, 1.0, 1.0), (0.5, 1.0, 1.0)]


@pytest.mark.parametrize(
    "image, prob, spacing, match",
    [
        (np.zeros((0, 4, 4)), np.zeros((0, 4, 4)), (1, 1, 1), "empty"),
        (np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), (1, 1, 1), "does not match"),
        (np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), (1, 1), "spacing"),
        (np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), (1, 0, 1), "spacing"),
        (np.zeros((4, 4, 4)), np.full((4, 4, 4), 1.5), (1, 1, 1), r"\[0, 1\]"),
        (np.zeros((4, 4, 4)), np.full((4, 4, 4), np.nan), (1, 1, 1), "NaN"),
        (np.zeros((4, 4, 4)), np.zeros((4, 4, 4), np.uint8), (1, 1, 1), "floating"),
        (np.zeros(4), np.zeros(4), (1,), "3-D"),
    ],
)
def test_bad_input_raises_a_helpful_value_error(image, prob, spacing, match):
    with pytest.raises(ValueError, match=match):
        crf_refine(image, prob, spacing)


def test_bad_parameters_raise_value_error():
    image, prob, _ = noisy_case()
    with pytest.raises(ValueError, match="pos_sigma_mm"):
        crf_refine(image, prob, SPACING, pos_sigma_mm=0)
    with pytest.raises(ValueError, match="threshold"):
        crf_refine(image, prob, SPACING, threshold=1.0)
    with pytest.raises(ValueError, match="roi"):
        crf_refine(image, prob, SPACING, roi=(slice(3, 3), slice(None), slice(None)))


# ----------------------------------------------------------------------------- two stages


def lesion_case(seed: int = 0):
    """Liver ellipsoid with a hypodense lesion inside, and a lesion-like blob outside the liver."""
    rng = np.random.default_rng(seed)
    liver = ellipsoid()
    lesion = ellipsoid(semi_axes_mm=(6.0, 6.0, 6.0), centre_shift=(0, 5, 3))
    outside_blob = ellipsoid(semi_axes_mm=(4.0, 4.0, 4.0), centre_shift=(0, -20, -20)) & ~liver
    image = np.where(liver, 60.0, 0.0)
    image[lesion] = 20.0
    image = (image + rng.normal(0.0, 10.0, SHAPE)).astype(np.float32)
    liver_prob = np.clip(np.where(liver, 0.85, 0.1) + rng.normal(0, 0.2, SHAPE), 0, 1).astype(np.float32)
    lesion_prob = np.where(lesion | outside_blob, 0.9, 0.05) + rng.normal(0, 0.15, SHAPE)
    lesion_prob = np.clip(lesion_prob, 0, 1).astype(np.float32)
    return image, liver_prob, lesion_prob, liver, lesion, outside_blob


def test_refine_labels_keeps_lesions_inside_the_liver():
    image, liver_prob, lesion_prob, liver, lesion, outside_blob = lesion_case()
    labels = refine_labels(image, liver_prob, lesion_prob, SPACING)
    assert labels.dtype == np.uint8 and labels.shape == SHAPE
    assert set(np.unique(labels)) == {0, 1, 2}
    assert not (labels[outside_blob] == 2).any()  # lesion probability outside the liver is ignored
    before = refine_labels(image, liver_prob, lesion_prob, SPACING, enabled=False)
    print(
        f"\nliver Dice {dice(before > 0, liver):.4f} -> {dice(labels > 0, liver):.4f}, "
        f"lesion Dice {dice(before == 2, lesion):.4f} -> {dice(labels == 2, lesion):.4f}"
    )
    assert dice(labels > 0, liver) > dice(before > 0, liver) + 0.05
    assert dice(labels == 2, lesion) > dice(before == 2, lesion)
    assert dice(labels == 2, lesion) > 0.8


def test_refine_labels_without_crf_is_the_threshold_rule():
    image, liver_prob, lesion_prob, *_ = lesion_case(seed=1)
    labels = refine_labels(image, liver_prob, lesion_prob, SPACING, enabled=False)
    liver = liver_prob >= 0.5
    np.testing.assert_array_equal(labels, lesions_in_liver(liver, lesion_prob >= 0.5))
    # Lesion probability above threshold apart from the thresholded liver stays background.
    assert ((lesion_prob >= 0.5) & ~liver).any() and (labels[~liver] == 0).mean() > 0.99


def test_lesions_in_liver_keeps_border_lesions_whole():
    liver = np.zeros((1, 4, 9), bool)
    liver[0, :, 2:6] = True
    lesion = np.zeros_like(liver)
    lesion[0, 1:3, 0:3] = True  # 2 of its 6 voxels in the liver (column 2): kept whole
    lesion[0, 3, 8] = True  # apart from the liver: dropped
    lesion[0, 3, 6] = True  # touches the liver only diagonally, nothing inside: dropped
    lesion[0, 0:2, 5:8] = True  # 2 of 6 inside with min_inside 0.25, 1/3 < 0.5
    expected = liver.astype(np.uint8)
    expected[0, 1:3, 0:3] = 2
    expected[0, 0:2, 5:8] = 2
    np.testing.assert_array_equal(lesions_in_liver(liver, lesion), expected)
    strict = lesions_in_liver(liver, lesion, min_inside=0.5)  # both components clipped to the liver
    np.testing.assert_array_equal(np.argwhere(strict == 2), np.argwhere(lesion & liver))
    np.testing.assert_array_equal(lesions_in_liver(liver, np.zeros_like(liver)), liver.astype(np.uint8))
    with pytest.raises(ValueError, match="same shape"):
        lesions_in_liver(liver, lesion[:, :2])
    with pytest.raises(ValueError, match="min_inside"):
        lesions_in_liver(liver, lesion, min_inside=1.5)


def test_refine_labels_empty_liver_and_shape_errors():
    image = np.zeros(SHAPE, np.float32)
    zeros = np.zeros(SHAPE, np.float32)
    assert not refine_labels(image, zeros, np.full(SHAPE, 0.9, np.float32), SPACING).any()
    with pytest.raises(ValueError, match="shape"):
        refine_labels(image, zeros, zeros[:, :, :10], SPACING)
    with pytest.raises(ValueError, match="shape"):
        refine_labels(image, zeros[:-1], zeros, SPACING)


def test_refine_labels_takes_the_profile_section():
    image, liver_prob, lesion_prob, liver, *_ = lesion_case(seed=2)
    section = resolve("smoke")["crf"]
    labels = refine_labels(image, liver_prob, lesion_prob, SPACING, **section)
    assert set(np.unique(labels)) <= {0, 1, 2}
    assert dice(labels > 0, liver) > dice(liver_prob >= 0.5, liver) + 0.05


KERNEL_KEYS = ("iterations", "pos_sigma_mm", "pos_weight", "bilateral_sigma_mm", "bilateral_sigma_hu", "bilateral_weight")


def test_function_defaults_are_the_profile_values():
    section = defaults("crf")
    # The profile's keys are refine_labels' CRF parameters, so **config["crf"] always fits.
    assert set(section) == set(inspect.signature(refine_labels).parameters) - {
        "image", "liver_prob", "lesion_prob", "spacing", "threshold", "roi_margin_mm", "max_voxels"
    }  # fmt: skip
    image, prob, _ = noisy_case(seed=6)
    kernels = {key: section[key] for key in KERNEL_KEYS}
    implicit = crf_refine(image, prob, SPACING, return_prob=True)
    explicit = crf_refine(image, prob, SPACING, return_prob=True, **kernels)
    for a, b in zip(implicit, explicit):
        np.testing.assert_array_equal(a, b)
    image, liver_prob, lesion_prob, *_ = lesion_case(seed=3)
    np.testing.assert_array_equal(
        refine_labels(image, liver_prob, lesion_prob, SPACING),
        refine_labels(image, liver_prob, lesion_prob, SPACING, **section),
    )
    assert crf.CHRIST2016["bilateral_sigma_hu"] == pytest.approx(39.2, abs=0.05)


def test_missing_parameters_are_read_from_the_profile(monkeypatch):
    image, prob, _ = noisy_case(seed=7)
    section = {**defaults("crf"), "iterations": 0}  # no mean field: the thresholded labels
    monkeypatch.setattr(crf, "defaults", lambda name: dict(section))
    np.testing.assert_array_equal(crf_refine(image, prob, SPACING), prob >= 0.5)
    assert not np.array_equal(crf_refine(image, prob, SPACING, iterations=5), prob >= 0.5)  # explicit values win
    image, liver_prob, lesion_prob, *_ = lesion_case(seed=3)
    section["enabled"] = False
    np.testing.assert_array_equal(
        refine_labels(image, liver_prob, lesion_prob, SPACING),
        refine_labels(image, liver_prob, lesion_prob, SPACING, enabled=False),
    )


def test_the_profile_is_the_one_source_of_crf_defaults():
    assert not hasattr(crf, "DEFAULTS")
