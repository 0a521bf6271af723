"""Mask helpers shared by the pipeline: connected components, bounding boxes, voxel volumes."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["bounding_box", "connected_components", "largest_component", "voxel_ml"]

Box = tuple[slice, ...]


def voxel_ml(spacing: Sequence[float]) -> float:
    """Millilitres per voxel of a grid with ``spacing`` (mm per axis)."""
    return float(np.prod(spacing)) / 1000.0


def bounding_box(mask: np.ndarray, margin: float = 0, spacing: Sequence[float] | None = None) -> Box | None:
    """The smallest box holding every True voxel, grown by ``margin`` on each side (clipped).

    Parameters
    ----------
    mask : ndarray of bool
    margin : float
        Padding on each side: voxels, or millimetres when ``spacing`` is given
        (rounded up to whole voxels per axis).
    spacing : sequence of float, optional
        mm per voxel along each axis.

    Returns
    -------
    tuple of slice, or None if ``mask`` is all False.
    """
    mask = np.asarray(mask, dtype=bool)
    box = []
    for axis in range(mask.ndim):
        others = tuple(i for i in range(mask.ndim) if i != axis)
        hits = np.flatnonzero(np.any(mask, axis=others) if others else mask)
        if hits.size == 0:
            return None
        pad = int(margin) if spacing is None else int(math.ceil(margin / spacing[axis] - 1e-9))
        box.append(slice(max(int(hits[0]) - pad, 0), min(int(hits[-1]) + 1 + pad, mask.shape[axis])))
    return tuple(box)


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components with full connectivity (26 in 3-D), and their sizes.

    Returns
    -------
    labels : ndarray of int, mask's shape
        0 outside the mask, 1..n for the components.
    sizes : ndarray of int, shape (n + 1,)
        Voxels per label; ``sizes[0]`` counts the background.
    """
    mask = np.asarray(mask, dtype=bool)
    labels, count = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    return labels, np.bincount(labels.ravel(), minlength=int(count) + 1)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of a mask (full connectivity, as :func:`connected_components`).

    Labelling runs on the mask's bounding box only, so a small liver in a
    512 x 512 x 900 volume costs little. An empty mask gives an empty mask; of
    equally large components the first in scan order is kept.
    """
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros(mask.shape, dtype=bool)
    box = bounding_box(mask)
    if box is None:
        return out
    labels, sizes = connected_components(mask[box])
    out[box] = labels == (1 + int(np.argmax(sizes[1:])))
    return out
