"""liverlib.transforms.augment: image and mask stay aligned; flip, rotation and seeds behave."""

from __future__ import annotations

import numpy as np
import pytest

from liverlib.transforms.augment import augment_batch, random_affines, warp_batch


def _ellipses(n=48, size=96):
    rows, cols = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        masks[i] = ((rows - 35 - i % 13) / 22.0) ** 2 + ((cols - 55 + i % 7) / 14.0) ** 2 < 1
    return masks


def test_image_and_mask_get_the_same_transform():
    masks = _ellipses()
    images = masks.astype(np.float32) * 100
    out_x, out_y = augment_batch(images, masks, np.random.default_rng(0))
    assert out_x.dtype == np.float32 and out_y.dtype == np.uint8
    assert set(np.unique(out_y)) == {0, 1}
    # image > 50 exactly where the mask is 1 (bilinear image, thresholded bilinear mask)
    mismatch = ((out_x > 50) != (out_y == 1)).sum(axis=(1, 2))
    assert mismatch.max() <= 2
    # the transforms really moved things: most masks differ from the input
    assert (out_y != masks).any(axis=(1, 2)).mean() > 0.9
    # zoom 0.9-1.1 changes the area by at most ~21 %, plus edge effects
    ratio = out_y.sum(axis=(1, 2)) / masks.sum(axis=(1, 2))
    assert 0.75 < ratio.min() and ratio.max() < 1.3


def test_bilinear_warp_equals_scipy_affine_transform():
    # scipy.ndimage's order-1 affine_transform with a constant-0 border beyond the edge
    # ("grid-constant") is the reference for the image; the mask is the same sampling > 0.5.
    from scipy import ndimage

    rng = np.random.default_rng(4)
    images = rng.random((6, 40, 52), dtype=np.float32)
    masks = (rng.random((6, 40, 52)) > 0.6).astype(np.float32)
    affines = random_affines(6, (40, 52), rng, rotation_deg=30.0, scale=(0.7, 1.3), shift=0.3)
    out_x, out_y = warp_batch(images, masks, affines)
    inverse = np.linalg.inv(affines[:, :, :2])
    for i in range(6):
        offset = -inverse[i] @ affines[i, :, 2]
        kw = dict(offset=offset, order=1, mode="grid-constant", cval=0.0)
        np.testing.assert_allclose(out_x[i], ndimage.affine_transform(images[i], inverse[i], **kw), atol=1e-5)
        reference = ndimage.affine_transform(masks[i], inverse[i], **kw)
        undecided = np.abs(reference - 0.5) < 1e-5  # float rounding may fall either side of the threshold
        assert np.array_equal(out_y[i][~undecided], (reference > 0.5)[~undecided])


def test_flip_mirrors_about_the_vertical_centre_axis():
    image = np.zeros((40, 96, 96), np.float32)
    image[:, 40:50, 5:15] = 1  # a marker on the left
    out_x, out_y = augment_batch(image, image, np.random.default_rng(1), rotation_deg=0, scale=(1, 1), shift=0)
    flipped = out_y[:, 45, 85] == 1
    assert 5 < flipped.sum() < 35  # about half are mirrored
    np.testing.assert_array_equal(out_y[flipped], image[flipped][:, :, ::-1])  # column c -> 95 - c
    np.testing.assert_array_equal(out_y[~flipped], image[~flipped])
    np.testing.assert_array_equal(out_x, out_y)
    # rows never move under a flip: the vertical axis is kept
    assert (out_y[:, :40].sum() == 0) and (out_y[:, 50:].sum() == 0)


def test_no_change_when_every_range_is_zero():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (5, 96, 96, 1)).astype(np.uint8)
    masks = (rng.random((5, 96, 96, 1)) > 0.5).astype(np.uint8)
    out_x, out_y = augment_batch(images, masks, rng, rotation_deg=0, flip=False, scale=(1, 1), shift=0)
    assert out_x.dtype == np.uint8 and out_x.shape == (5, 96, 96, 1)
    np.testing.assert_array_equal(out_x, images)
    np.testing.assert_array_equal(out_y, masks)
    same_x, same_y = augment_batch(images, masks, rng, enabled=False)
    assert same_x is images and same_y is masks


def test_a_quarter_turn_is_rot90():
    # output = centre + A (input - centre), A = [[0, -1], [1, 0]]: out[r, c] = in[c, 95 - r]
    image = np.random.default_rng(3).random((2, 96, 96)).astype(np.float32)
    centre = np.array([47.5, 47.5])
    a = np.array([[0.0, -1.0], [1.0, 0.0]])
    affine = np.concatenate([a, (centre - a @ centre)[:, None]], axis=1)
    out, _ = warp_batch(image, None, np.stack([affine, affine]))
    np.testing.assert_allclose(out, np.rot90(image, k=1, axes=(1, 2)), atol=1e-5)


def test_outside_the_image_is_zero():
    image = np.ones((1, 96, 96), np.float32)
    shift_right = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 20.0]]])
    out, mask = warp_batch(image, image.astype(np.uint8), shift_right)
    assert not out[0, :, :20].any() and not mask[0, :, :20].any()
    np.testing.assert_array_equal(out[0, :, 20:], 1)


def test_multi_label_masks_keep_their_values():
    label = np.zeros((8, 96, 96), np.uint8)
    label[:, 20:70, 20:70] = 1
    label[:, 40:50, 40:50] = 2
    _, out = augment_batch(label.astype(np.float32), label, np.random.default_rng(4))
    assert set(np.unique(out)) == {0, 1, 2}


def test_seeded_and_ranges_respected():
    masks = _ellipses(8)
    a = augment_batch(masks * 100.0, masks, np.random.default_rng(5))
    b = augment_batch(masks * 100.0, masks, np.random.default_rng(5))
    c = augment_batch(masks * 100.0, masks, np.random.default_rng(6))
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
    affines = random_affines(500, (96, 96), np.random.default_rng(7), rotation_deg=15, scale=(0.9, 1.1), shift=0.1)
    zoom = np.sqrt(np.abs(np.linalg.det(affines[:, :, :2])))
    assert 0.9 <= zoom.min() and zoom.max() <= 1.1
    angle = np.degrees(np.arctan2(affines[:, 1, 0], affines[:, 0, 0]))
    assert np.abs(angle).max() <= 15 + 1e-9 and np.abs(angle).max() > 13
    # the centre moves by the shift only: at most 0.1 * 96 per axis
    moved = affines[:, :, :2] @ np.array([47.5, 47.5]) + affines[:, :, 2] - 47.5
    assert np.abs(moved).max() <= 9.6 + 1e-9


def test_bad_shapes_are_reported():
    with pytest.raises(ValueError, match="same shape"):
        augment_batch(np.zeros((2, 96, 96)), np.zeros((2, 96, 95)), np.random.default_rng())
    with pytest.raises(ValueError, match="scale"):
        augment_batch(np.zeros((2, 8, 8)), np.zeros((2, 8, 8)), np.random.default_rng(), scale=(1.1, 0.9))
