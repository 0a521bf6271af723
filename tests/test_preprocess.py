"""liverlib.transforms: window, equalization formula, slice selection, resize, ROI, one case."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from support import REAL_CT, REAL_MASK

from liverlib.data import CaseFiles, load_case
from liverlib.transforms import (
    Roi,
    crop,
    equalize_histogram,
    equalize_slices,
    fill_padding,
    image_options,
    liver_roi,
    pad_square,
    paste,
    prepare_slices,
    prepare_volume_stage1,
    prepare_volume_stage2,
    preprocess_case,
    resize_back,
    resize_slices,
    select_slices,
    square_box,
    stage1_to_image,
    stage2_to_volume,
    window,
)


@pytest.fixture(scope="module")
def real_case():
    return load_case(CaseFiles(0, REAL_CT, REAL_MASK))


# --------------------------------------------------------------------------- window


def test_window_clips_to_the_hu_window_as_float32():
    image = np.array([[-1024, -100, -99], [0, 300, 3071]], dtype=np.int16)
    out = window(image)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[-100, -100, -99], [0, 300, 300]])
    assert image[0, 0] == -1024  # the input is not modified
    np.testing.assert_array_equal(window(image, (-50, 50)), [[-50, -50, -50], [0, 50, 50]])
    with pytest.raises(ValueError, match="low < high"):
        window(image, (300, -100))


def test_window_never_modifies_a_float32_input():
    image = np.array([-1000.0, 1000.0], dtype=np.float32)
    window(image)
    np.testing.assert_array_equal(image, [-1000.0, 1000.0])


# --------------------------------------------------------------------------- equalization


def test_equalization_formula_by_hand():
    # 2 x 3 slice windowed to [-100, 300]: L*W = 6 pixels, S = 256.
    # values  -100  0  50  300
    # count      2  2   1    1
    # cdf        2  4   5    6     cdf_min = 2, L*W - cdf_min = 4
    # h(-100) = round(0/4 * 255) = 0
    # h(0)    = round(2/4 * 255) = round(127.5) = 128 (half up)
    # h(50)   = round(3/4 * 255) = round(191.25) = 191
    # h(300)  = round(4/4 * 255) = 255
    image = np.array([[-100.0, -100.0, 0.0], [0.0, 50.0, 300.0]])
    out = equalize_histogram(image, levels=256)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 0, 128], [128, 191, 255]])


def test_equalization_rounds_half_up_exactly():
    # 1 x 3 slice, S = 6: cdf = 1, 2, 3; cdf_min = 1; L*W - cdf_min = 2
    # h(10) = round(1/2 * 5) = round(2.5) = 3 (half up; banker's rounding would say 2)
    out = equalize_histogram(np.array([[0.0, 10.0, 20.0]]), levels=6)
    np.testing.assert_array_equal(out, [[0, 3, 5]])


def test_equalization_is_exact_for_close_floats_and_constant_slices():
    # No binning: values 1e-6 apart are different gray levels.
    out = equalize_histogram(np.array([[0.5, 0.500001], [0.500002, 0.500003]]), levels=4)
    np.testing.assert_array_equal(out, [[0, 1], [2, 3]])
    flat = equalize_histogram(np.full((5, 7), -100.0))
    assert flat.dtype == np.uint8 and not flat.any()  # L*W == cdf_min: zeros, no division by zero


def test_equalize_slices_matches_the_per_slice_formula():
    rng = np.random.default_rng(1)
    stack = np.clip(np.round(rng.normal(40, 120, (7, 20, 24))), -100, 300).astype(np.float32)
    stack[3] = 17.0  # a constant slice
    expected = np.stack([equalize_histogram(s, levels=256) for s in stack])
    np.testing.assert_array_equal(equalize_slices(stack), expected)
    codes = (stack + 100).astype(np.uint16)  # the integer path (radix sort) gives the same
    np.testing.assert_array_equal(equalize_slices(codes), expected)
    with pytest.raises(ValueError, match="equalize_slices"):
        equalize_histogram(stack)


def test_equalization_maps_air_to_zero_and_spreads_the_body(real_case):
    x = prepare_volume_stage1(real_case.image[10:12])
    assert x.dtype == np.uint8 and x.shape == (2, 96, 96)
    assert x.max() == 255
    # The corners are air (-1000 HU -> -100 after windowing): the minimum, so exactly 0.
    assert (x[:, :3, :3] == 0).all()
    # Equalized: gray levels roughly uniform over the pixels above the air.
    body = x[x > 0].astype(float)
    assert 0.35 < body.mean() / 255 < 0.75


# --------------------------------------------------------------------------- slice selection


def _label_with_liver(planes=40, liver=(15, 25)):
    label = np.zeros((planes, 8, 8), np.uint8)
    label[liver[0] : liver[1], 2:6, 2:6] = 1
    label[18, 3, 3] = 2
    return label


def test_stage2_keeps_exactly_the_liver_slices():
    label = _label_with_liver()
    np.testing.assert_array_equal(select_slices(label, 2), np.arange(15, 25))


def test_stage1_adds_the_configured_share_of_liver_free_slices():
    label = _label_with_liver()  # 10 liver slices
    kept = select_slices(label, 1, negative_fraction=0.25, rng=3)
    negatives = np.setdiff1d(kept, np.arange(15, 25))
    # share 0.25 of the kept slices: 10 * 0.25 / 0.75 = 3.33 -> 3 negatives
    assert len(kept) == 13 and len(negatives) == 3
    # half (rounded up) are the nearest to the liver: planes 14 and 25 first
    assert {14, 25} <= set(negatives)
    np.testing.assert_array_equal(kept, np.sort(kept))
    np.testing.assert_array_equal(kept, select_slices(label, 1, 0.25, rng=3))  # reproducible
    np.testing.assert_array_equal(select_slices(label, 1, 0.0), np.arange(15, 25))
    # more negatives wanted than exist: all of them
    assert len(select_slices(label, 1, 0.9)) == 40
    assert select_slices(np.zeros((5, 4, 4), np.uint8), 1).size == 0
    with pytest.raises(ValueError, match="negative_fraction"):
        select_slices(label, 1, 1.0)


# --------------------------------------------------------------------------- resize


def test_label_resize_never_invents_values_or_structures():
    rng = np.random.default_rng(0)
    label = np.zeros((3, 512, 512), np.uint8)
    label[:, 100:300, 150:400] = 1
    label[:, 180:200, 200:230] = 2
    label[1] = 0
    label[2, 10, 10] = 2  # a single pixel
    out = resize_slices(label, 96, order=0)
    assert out.dtype == np.uint8 and out.shape == (3, 96, 96)
    assert set(np.unique(out)) <= {0, 1, 2}
    assert not out[1].any()  # nothing invented on an empty slice
    # nearest neighbour: every output pixel is an input pixel
    shrink = 512 / 96
    rows = np.minimum(np.floor((np.arange(96) + 0.5) * shrink).astype(int), 511)
    np.testing.assert_array_equal(out[0], label[0][np.ix_(rows, rows)])
    # a 96 x 96 label enlarged 5x by pixel repetition comes back exactly
    small = rng.integers(0, 3, (2, 96, 96)).astype(np.uint8)
    big = small.repeat(5, axis=1).repeat(5, axis=2)
    np.testing.assert_array_equal(resize_slices(big, 96, order=0), small)


def test_image_resize_is_antialiased_and_keeps_constants():
    checker = (np.indices((512, 512)).sum(axis=0) % 2).astype(np.float32)[None] * 100
    out = resize_slices(checker, 96)
    assert out.shape == (1, 96, 96) and out.dtype == np.float32
    # a pixel-level checkerboard averages out to grey instead of aliasing to black/white
    assert abs(out.mean() - 50) < 1 and out.std() < 5
    constant = np.full((2, 300, 200), -100.0, np.float32)
    np.testing.assert_allclose(resize_slices(constant, 96), -100.0, atol=1e-3)


def test_resize_back_restores_the_grid_and_keeps_probabilities_in_range():
    rng = np.random.default_rng(0)
    prob = rng.random((4, 96, 96)).astype(np.float32)
    back = resize_back(prob, (512, 400))
    assert back.shape == (4, 512, 400)
    assert back.min() >= 0 and back.max() <= 1
    mask = np.zeros((1, 96, 96), np.float32)
    mask[0, 24:72, 24:72] = 1
    np.testing.assert_array_equal(resize_back(mask, (192, 192), order=0)[0, 48:144, 48:144], 1)
    assert resize_back(mask, (192, 192), order=0).sum() == 96 * 96


def test_prepared_slices_keep_the_air_as_one_gray_level():
    # Resampling round-off would split a constant -100 HU background into many
    # values; the 0.01 HU quantization keeps it one level, so it maps to 0.
    image = np.full((1, 512, 512), -1024.0, np.float32)
    image[0, 100:400, 50:450] = np.random.default_rng(0).normal(50, 30, (300, 400))
    x = prepare_slices(image)
    assert (x[0, :10] == 0).all() and (x[0, :, :5] == 0).all()
    linear = prepare_slices(image, equalize=False)
    assert linear[0, 0, 0] == 0 and 85 < linear[0, 48, 48] < 107  # 50 HU -> 150/400*255 = 96 +- noise


def _scan_with_padding(value: float) -> np.ndarray:
    """Two 128 x 128 slices: noisy air and body inside a circular field, ``value`` outside it."""
    rng = np.random.default_rng(3)
    image = rng.normal(-1000.0, 15.0, (2, 128, 128)).astype(np.float32)
    rows, cols = np.mgrid[:128, :128]
    image[:, 30:100, 25:105] = rng.normal(60.0, 20.0, (2, 70, 80))
    image[:, 60:64, 60:64] = 0.0  # a constant patch inside the body is not padding
    image[:, (rows - 63.5) ** 2 + (cols - 63.5) ** 2 > 64**2] = value
    return image


def test_fill_padding_turns_zero_hu_padding_into_air():
    image = _scan_with_padding(0.0)
    outside = image == 0.0
    outside[:, 60:64, 60:64] = False
    out = fill_padding(image)
    assert out is not image and (image[outside] == 0.0).all()  # the input is not modified
    np.testing.assert_array_equal(out[outside], -1024.0)
    np.testing.assert_array_equal(out[~outside], image[~outside])
    # the network then sees the same slices as for a scanner that pads with -1024 HU
    np.testing.assert_array_equal(prepare_volume_stage1(image), prepare_volume_stage1(_scan_with_padding(-1024.0)))
    assert prepare_volume_stage1(image)[:, 0, 0].max() == 0  # the corners are air, not liver gray


@pytest.mark.parametrize("value", [-1024.0, -3024.0])
def test_fill_padding_leaves_padding_below_the_window_alone(value):
    image = _scan_with_padding(value)
    assert fill_padding(image) is image


def test_fill_padding_leaves_real_ct_and_small_constant_corners_alone(real_case):
    assert fill_padding(real_case.image) is real_case.image
    image = _scan_with_padding(-1024.0)
    image[:, :5, :5] = 40.0  # 25 pixels: below MIN_PADDING_FRACTION of the slice
    assert fill_padding(image) is image
    with pytest.raises(ValueError, match="planes, rows, columns"):
        fill_padding(image[0])


def test_preprocess_case_fills_padding_like_inference(real_case):
    image = real_case.image.copy()
    image[:, :, :12] = 0.0  # padding down the left edge, inside the window
    out = preprocess_case(dataclasses.replace(real_case, image=image))
    np.testing.assert_array_equal(prepare_volume_stage1(image)[out["stage1_z"]], out["stage1_x"])
    assert (out["stage1_x"][:, :, :3] == 0).all()  # the padded columns became air


def test_non_square_slices_are_padded_with_air_not_stretched():
    # a (2, 60, 90) slab: air, with a disc of soft tissue of radius 20 px in its middle
    rows, cols = np.mgrid[:60, :90]
    disc = (rows - 29.5) ** 2 + (cols - 44.5) ** 2 <= 20**2
    image = np.where(disc, 50.0, -1000.0)[None].repeat(2, axis=0).astype(np.float32)
    assert square_box((60, 90)) == Roi(15, 75, 0, 90, (90, 90))
    padded = pad_square(image, -1000.0)
    assert padded.shape == (2, 90, 90) and (padded[:, :15] == -1000).all() and (padded[:, 75:] == -1000).all()
    np.testing.assert_array_equal(padded[:, 15:75], image)
    assert pad_square(padded, 0.0) is padded  # square: as it is
    # stage 1 sees a disc, not the ellipse stretching 60 rows to 96 would make (width 43, height 64)
    gray = prepare_volume_stage1(image)
    body = gray[0] > 0
    height, width = np.ptp(np.nonzero(body.any(axis=1))) + 1, np.ptp(np.nonzero(body.any(axis=0))) + 1
    assert abs(height - width) <= 1 and 41 <= width <= 45
    np.testing.assert_array_equal(gray, prepare_volume_stage1(padded))
    # and the probabilities go back onto the 60 x 90 grid where the disc is
    prob = resize_slices(pad_square(disc[None].astype(np.float32), 0.0), 96)
    back = stage1_to_image(prob, (60, 90))
    assert back.shape == (1, 60, 90)
    assert ((back[0] >= 0.5) == disc).mean() > 0.99


# --------------------------------------------------------------------------- ROI


def test_liver_roi_by_hand():
    mask = np.zeros((3, 100, 120), bool)
    mask[1, 40:50, 30:70] = True  # 10 rows x 40 columns
    roi = liver_roi(mask, spacing=(5.0, 2.0, 2.0), margin_mm=10.0)
    # margin 10 mm / 2 mm = 5 px: rows 35..55 (20), columns 25..75 (50); square 50:
    # rows grow by 30 around the centre: 35 - 15 = 20 .. 70
    assert roi == Roi(20, 70, 25, 75, (100, 120))
    assert roi.height == roi.width == 50
    # near the border it is shifted inside, not cut: padded box rows -2..12,
    # columns 98..122 (24 wide) -> a 24-pixel square moved inside the image
    mask2 = np.zeros((1, 100, 120), bool)
    mask2[0, 0:10, 100:120] = True
    roi2 = liver_roi(mask2, (1.0, 1.0, 1.0), margin_mm=2.0)
    assert roi2 == Roi(0, 24, 96, 120, (100, 120))
    # larger than the image in one direction: the whole image that way
    roi3 = liver_roi(np.ones((1, 30, 80), bool), (1.0, 1.0, 1.0), 0.0)
    assert (roi3.row0, roi3.row1, roi3.col0, roi3.col1) == (0, 30, 0, 80)
    with pytest.raises(ValueError, match="empty"):
        liver_roi(np.zeros((2, 10, 10), bool), (1.0, 1.0, 1.0))
    assert Roi.from_array(roi.to_array()) == roi


def test_crop_then_paste_is_exact_on_the_label_grid(real_case):
    label = real_case.label
    roi = liver_roi(label > 0, real_case.spacing, margin_mm=10.0)
    cropped = crop(label, roi)
    assert cropped.shape == (label.shape[0], roi.height, roi.width)
    # the whole liver lies in the ROI, so pasting back gives the label exactly
    np.testing.assert_array_equal(paste(cropped, roi), label)
    np.testing.assert_array_equal(paste(cropped, roi, label.shape), label)
    np.testing.assert_array_equal(crop(paste(cropped, roi), roi), cropped)
    filled = paste(np.zeros_like(cropped), roi, fill=7)
    assert (filled == 7).sum() == label.size - cropped.size


# --------------------------------------------------------------------------- one case, training == inference


def test_preprocess_case_on_the_real_ct(real_case):
    out = preprocess_case(real_case, negative_fraction=0.25)
    z1, z2 = out["stage1_z"], out["stage2_z"]
    # every slice of this crop holds liver: stage 1 = stage 2 = all 30 planes
    np.testing.assert_array_equal(z1, np.arange(30))
    np.testing.assert_array_equal(z2, np.arange(30))
    for name in ("stage1_x", "stage1_y", "stage2_x", "stage2_y"):
        assert out[name].dtype == np.uint8 and out[name].shape == (30, 96, 96)
    assert set(np.unique(out["stage1_y"])) == {0, 1}
    # this 101 x 122 excerpt is padded to 122 x 122 (air above and below) before the resize
    np.testing.assert_array_equal(out["stage1_y"], resize_slices(pad_square(real_case.label > 0, False), 96, order=0))
    assert not out["stage2_y"].any()  # no lesion in this case
    # inference preprocesses exactly as training
    np.testing.assert_array_equal(prepare_volume_stage1(real_case.image)[z1], out["stage1_x"])
    x2, planes, roi = prepare_volume_stage2(real_case.image, real_case.label > 0, real_case.spacing)
    np.testing.assert_array_equal(x2, out["stage2_x"])
    np.testing.assert_array_equal(planes, z2)
    assert roi == Roi.from_array(out["roi"])
    # liver fills about a tenth of the padded slices
    assert 0.05 < out["stage1_y"].mean() < 0.2


def test_preprocess_case_with_lesion_and_liver_free_slices(real_case):
    label = np.zeros((40, 64, 64), np.uint8)
    label[10:30, 10:40, 20:50] = 1
    label[15:20, 20:26, 30:36] = 2
    image = np.where(label > 0, 60.0, -1000.0).astype(np.float32)
    image[label == 2] = 10.0
    case = type(real_case)(5, image, label, (2.5, 0.8, 0.8), real_case.geometry, real_case.files)
    out = preprocess_case(case, negative_fraction=0.2, roi_margin_mm=4.0)
    assert len(out["stage1_z"]) == 20 + 5  # 20 * 0.2 / 0.8 = 5 liver-free slices
    np.testing.assert_array_equal(out["stage2_z"], np.arange(10, 30))
    lesion_planes = np.flatnonzero(out["stage2_y"].any(axis=(1, 2))) + 10
    np.testing.assert_array_equal(lesion_planes, np.arange(15, 20))
    roi = Roi.from_array(out["roi"])
    assert (roi.row0, roi.row1, roi.col0, roi.col1) == (5, 45, 15, 55)  # 30 + 2*5 px, square
    # lesion pixels are darker than liver pixels in the equalized ROI
    x2, y2 = out["stage2_x"][5:10], out["stage2_y"][5:10]
    assert x2[y2 == 1].mean() < x2[(y2 == 0) & (x2 > 0)].mean()
    # back to the volume: the lesion mask pasted onto the grid
    back = stage2_to_volume(out["stage2_y"], out["stage2_z"], roi, 40, order=0)
    np.testing.assert_array_equal(back > 0.5, label == 2)
    assert image_options({"size": 96, "workers": 2, "levels": 256}) == {"size": 96, "levels": 256}
