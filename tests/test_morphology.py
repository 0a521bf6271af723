"""liverlib.transforms.morphology: boxes, components and volumes against hand-computed answers."""

from __future__ import annotations

import numpy as np

from liverlib.transforms.morphology import bounding_box, connected_components, largest_component, voxel_ml


def test_bounding_box_in_voxels():
    m = np.zeros((5, 6), bool)
    m[1:4, 2:5] = True
    assert bounding_box(m) == (slice(1, 4), slice(2, 5))
    assert bounding_box(m, margin=2) == (slice(0, 5), slice(0, 6))
    assert bounding_box(np.zeros((3, 3), bool)) is None


def test_bounding_box_margin_in_mm_rounds_up_per_axis():
    mask = np.zeros((24, 48, 48), bool)
    mask[8:16, 16:30, 2:12] = True
    # 4 mm is 2 planes of 2 mm and 4 rows / columns of 1 mm; clipped at column 0
    assert bounding_box(mask, 4.0, (2.0, 1.0, 1.0)) == (slice(6, 18), slice(12, 34), slice(0, 16))
    assert bounding_box(mask, 3.0, (2.0, 1.0, 1.0)) == (slice(6, 18), slice(13, 33), slice(0, 15))
    assert bounding_box(np.zeros((24, 48, 48), bool), 4.0, (2.0, 1.0, 1.0)) is None


def test_connected_components_use_full_connectivity():
    mask = np.zeros((4, 6, 6), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = mask[2, 2, 2] = True  # diagonal chain: one component
    mask[0, 5, 5] = mask[0, 4, 5] = True                   # two voxels, separate
    labels, sizes = connected_components(mask)
    assert sorted(sizes[1:].tolist()) == [2, 3] and sizes[0] == mask.size - 5
    assert labels[0, 0, 0] == labels[2, 2, 2] != labels[0, 5, 5]


def test_largest_component_uses_full_connectivity():
    mask = np.zeros((4, 6, 6), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = mask[2, 2, 2] = True
    mask[0, 5, 5] = mask[0, 4, 5] = True
    np.testing.assert_array_equal(largest_component(mask), mask & (np.indices(mask.shape)[1] < 3))
    assert not largest_component(np.zeros((3, 3, 3), bool)).any()


def test_voxel_ml():
    assert voxel_ml((2.0, 0.5, 0.5)) == 0.0005
    assert voxel_ml((10.0, 10.0, 10.0)) == 1.0
