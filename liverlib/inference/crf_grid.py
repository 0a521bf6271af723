"""The CRF's grid: in-plane and through-plane factors for a coarser grid, block averaging to it and linear interpolation back."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["block_mean", "upsample", "grid_factor", "plane_factor", "downsample_factor"]


def block_mean(array: np.ndarray, factor: int, plane_factor: int = 1) -> np.ndarray:
    """Mean over ``factor`` x ``factor`` blocks of the last two axes, and ``plane_factor`` planes of the third-last (edge-padded)."""
    if plane_factor > 1:
        if array.ndim < 3:
            raise ValueError(f"plane_factor needs (..., plane, row, column) arrays, got shape {array.shape}")
        planes = array.shape[-3]
        pad = (-planes) % plane_factor
        if pad:
            array = np.pad(array, [(0, 0)] * (array.ndim - 3) + [(0, pad), (0, 0), (0, 0)], mode="edge")
        shape = array.shape[:-3] + (array.shape[-3] // plane_factor, plane_factor) + array.shape[-2:]
        array = array.reshape(shape).mean(axis=-3, dtype=np.float32)
    if factor == 1:
        return np.asarray(array, np.float32)
    rows, cols = array.shape[-2:]
    pad_r, pad_c = (-rows) % factor, (-cols) % factor
    if pad_r or pad_c:
        width = [(0, 0)] * (array.ndim - 2) + [(0, pad_r), (0, pad_c)]
        array = np.pad(array, width, mode="edge")
    shape = array.shape[:-2] + (array.shape[-2] // factor, factor, array.shape[-1] // factor, factor)
    return array.reshape(shape).mean(axis=(-3, -1), dtype=np.float32)


def _upsample_axis(array: np.ndarray, axis: int, factor: int, size: int) -> np.ndarray:
    """Linear interpolation along ``axis`` from block centres back to ``size`` voxels."""
    n = array.shape[axis]
    # Fine voxel k lies at coarse coordinate (k + 0.5) / factor - 0.5.
    pos = np.clip((np.arange(size) + 0.5) / factor - 0.5, 0, n - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, n - 1)
    view = [1] * array.ndim
    view[axis] = size
    w = (pos - lo).astype(np.float32).reshape(view)
    out = np.take(array, lo, axis=axis)
    out *= 1 - w  # in place: the same sum as ``a_lo * (1 - w) + a_hi * w``, two temporaries fewer
    upper = np.take(array, hi, axis=axis)
    upper *= w
    out += upper
    return out


def upsample(array: np.ndarray, factor: int, shape: tuple[int, ...], plane_factor: int = 1) -> np.ndarray:
    """Linear interpolation back from :func:`block_mean`'s grid to ``shape`` (rows, columns), or (planes, rows, columns)."""
    out = array
    if plane_factor > 1:
        out = _upsample_axis(out, array.ndim - 3, plane_factor, shape[-3])
    if factor > 1:
        out = _upsample_axis(out, array.ndim - 2, factor, shape[-2])
        out = _upsample_axis(out, array.ndim - 1, factor, shape[-1])
    return out


def grid_factor(spacing: tuple[float, ...], grid_mm: float) -> int:
    """Largest in-plane factor whose coarse voxels stay within ``grid_mm`` on both in-plane axes (1 if none).

    Examples
    --------
    >>> grid_factor((2.5, 0.8, 0.8), 2.0), grid_factor((2.5, 0.55, 0.6), 2.0), grid_factor((5.0, 1.5, 1.5), 2.0)
    (2, 3, 1)
    """
    if grid_mm <= 0:
        return 1
    return max(1, int(math.floor(grid_mm / max(spacing[-2], spacing[-1]) + 1e-6)))


def plane_factor(spacing: tuple[float, ...], grid_mm: float) -> int:
    """Largest through-plane factor whose coarse planes stay within ``grid_mm`` apart (1 if none, or for 2-D).

    Examples
    --------
    >>> plane_factor((0.7, 0.8, 0.8), 3.0), plane_factor((1.25, 0.5, 0.5), 3.0), plane_factor((2.5, 0.8, 0.8), 3.0)
    (4, 2, 1)
    """
    if grid_mm <= 0 or len(spacing) < 3:
        return 1
    return max(1, int(math.floor(grid_mm / spacing[-3] + 1e-6)))


def downsample_factor(shape: tuple[int, ...], max_voxels: int) -> int:
    """Smallest in-plane factor that brings a box of ``shape`` to ``max_voxels`` (1 if it fits).

    The slice axis is never downsampled: it is already the coarsest in CT.
    """
    size = math.prod(shape)
    if size <= max_voxels:
        return 1
    planes, rows, cols = math.prod(shape[:-2]), shape[-2], shape[-1]

    def coarse_size(f: int) -> int:
        return planes * math.ceil(rows / f) * math.ceil(cols / f)

    factor = int(math.ceil(math.sqrt(size / max_voxels)))
    while coarse_size(factor) > max_voxels and factor < max(rows, cols):
        factor += 1
    if coarse_size(factor) > max_voxels:
        raise ValueError(
            f"CRF region {shape} exceeds max_voxels={max_voxels} even after in-plane downsampling; "
            "raise max_voxels or give a smaller roi"
        )
    return factor
