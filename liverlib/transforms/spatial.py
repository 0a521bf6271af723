"""Spatial transforms of CT slices: resizing to the network's grid and back, the liver region of interest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


def as_size2(size: int | Sequence[int]) -> tuple[int, int]:
    pair = (size, size) if np.isscalar(size) else tuple(size)
    if len(pair) != 2 or any(int(s) != s or s < 1 for s in pair):
        raise ValueError(f"size must be a positive int or (rows, columns), got {size!r}")
    return int(pair[0]), int(pair[1])


def _linear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of antialiased linear resampling along one axis.

    A triangle filter centred on each output pixel (pixel centres aligned, as in
    scikit-image and PIL), whose half-width is one input pixel when enlarging
    (plain linear interpolation) and the reduction factor when shrinking (so it
    averages every input pixel it covers: the anti-aliasing). This is the
    "bilinear, antialias=True" of PIL and torchvision. Rows are normalized, which
    also clamps at the edges.
    """
    scale = n_in / n_out
    support = max(scale, 1.0)
    centres = (np.arange(n_out) + 0.5) * scale - 0.5
    weights = np.maximum(0.0, 1.0 - np.abs(np.arange(n_in)[None, :] - centres[:, None]) / support)
    weights /= weights.sum(axis=1, keepdims=True)
    return weights.astype(np.float32)


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Input index of each output pixel's centre (same centre alignment as the linear path)."""
    return np.minimum(np.floor((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)


def nearest_planes(volume: np.ndarray, planes: np.ndarray, size: int | Sequence[int]) -> np.ndarray:
    """``resize_slices(volume[planes], size, order=0)`` in one gather, without copying whole slices."""
    out_rows, out_cols = as_size2(size)
    rows = _nearest_index(volume.shape[1], out_rows)
    cols = _nearest_index(volume.shape[2], out_cols)
    return volume[np.asarray(planes)[:, None, None], rows[None, :, None], cols[None, None, :]]


def _resample(stack: np.ndarray, shape: tuple[int, int], order: int) -> np.ndarray:
    """Resample the last two axes of a (planes, rows, columns) stack to ``shape``."""
    n, rows, cols = stack.shape
    out_rows, out_cols = shape
    if order == 0:
        return stack[:, _nearest_index(rows, out_rows)][:, :, _nearest_index(cols, out_cols)]
    if order != 1:
        raise ValueError(f"order must be 0 (nearest, labels) or 1 (antialiased linear, images), got {order!r}")
    if n == 0:
        return np.zeros((0, out_rows, out_cols), np.float32)
    # Separable: two matrix products over the whole stack, one BLAS call each.
    x = np.asarray(stack, dtype=np.float32)
    along_cols = _linear_matrix(cols, out_cols)  # (out_cols, cols)
    along_rows = _linear_matrix(rows, out_rows)  # (out_rows, rows)
    tmp = x.reshape(n * rows, cols) @ along_cols.T  # (n*rows, out_cols)
    tmp = tmp.reshape(n, rows, out_cols).transpose(1, 0, 2).reshape(rows, n * out_cols)
    out = (along_rows @ tmp).reshape(out_rows, n, out_cols).transpose(1, 0, 2)
    return np.ascontiguousarray(out)


def resize_slices(stack: np.ndarray, size: int | Sequence[int] = 96, order: int = 1) -> np.ndarray:
    """Resize every slice of a stack in-plane (the paper's 512 x 512 -> 96 x 96).

    Parameters
    ----------
    stack : ndarray, shape (planes, rows, columns) or (rows, columns)
    size : int or (int, int)
        Output in-plane size.
    order : {1, 0}
        1 for images: antialiased linear resampling (a triangle filter as wide as
        the reduction factor, so shrinking 512 -> 96 averages all the pixels that
        fall in an output pixel instead of aliasing). It is done as two small
        matrix products over the whole stack, much faster than filtering then
        interpolating slice by slice. Output float32.
        0 for labels: nearest neighbour, so no new label value is ever created
        (a label can only lose, never gain, small structures). Output has the
        input's dtype.

    Returns
    -------
    ndarray, shape (planes, size, size) or (size, size).
    """
    stack = np.asarray(stack)
    if stack.ndim not in (2, 3):
        raise ValueError(f"resize_slices takes a 2-D slice or a 3-D stack, got shape {stack.shape}")
    shape = as_size2(size)
    if stack.ndim == 2:
        return _resample(stack[None], shape, order)[0]
    return _resample(stack, shape, order)


def resize_back(prob_stack: np.ndarray, shape: Sequence[int], order: int = 1) -> np.ndarray:
    """Resample 96 x 96 outputs (probabilities or labels) to an in-plane ``shape``.

    The inverse mapping of :func:`resize_slices`, with the same pixel-centre
    alignment, for inference: a probability map goes back to the image grid (or
    the ROI's size before :func:`paste`), then is thresholded there.

    Parameters
    ----------
    prob_stack : ndarray, shape (planes, rows, columns) or (rows, columns)
    shape : (int, int)
        Target in-plane shape, e.g. the original (512, 512) or the ROI's size.
    order : {1, 0}
        1 linear (convex weights: probabilities stay in [0, 1]); 0 nearest.
    """
    return resize_slices(prob_stack, as_size2(tuple(shape)[-2:]), order)


@dataclass(frozen=True)
class Roi:
    """An in-plane box ``[row0:row1, col0:col1]`` on an image of ``shape`` (rows, columns)."""

    row0: int
    row1: int
    col0: int
    col1: int
    shape: tuple[int, int]

    @property
    def height(self) -> int:
        return self.row1 - self.row0

    @property
    def width(self) -> int:
        return self.col1 - self.col0

    def to_array(self) -> np.ndarray:
        """``[row0, row1, col0, col1, rows, columns]`` as int64, for storage in the cache."""
        return np.array([self.row0, self.row1, self.col0, self.col1, *self.shape], dtype=np.int64)

    @classmethod
    def from_array(cls, values: np.ndarray) -> "Roi | None":
        """Inverse of :meth:`to_array`; an array of -1 (no liver) gives None."""
        v = [int(x) for x in np.asarray(values).ravel()]
        if len(v) != 6:
            raise ValueError(f"a stored ROI has 6 values, got {len(v)}")
        if v[0] < 0:
            return None
        return cls(v[0], v[1], v[2], v[3], (v[4], v[5]))


NO_ROI = np.full(6, -1, dtype=np.int64)


def liver_roi(mask: np.ndarray, spacing: Sequence[float], margin_mm: float = 10.0) -> Roi:
    """The stage-2 region of interest: the padded, squared bounding box of the liver.

    One box per case: the in-plane bounding box of the liver over all planes (so
    every slice of the case is cropped the same way and predictions can be pasted
    back), padded by ``margin_mm`` on each side (converted to pixels with the
    in-plane spacing, rounded up), then grown to a square around its centre so
    that resizing it to 96 x 96 keeps the aspect ratio, and shifted/clipped to lie
    inside the image. If the image is narrower than the square in one direction,
    the box spans the whole image in that direction (as square as the image allows).

    Parameters
    ----------
    mask : ndarray, shape (planes, rows, columns) or (rows, columns)
        Liver mask (any non-zero value is liver: pass ``label > 0`` or a prediction).
    spacing : sequence of float
        Voxel size in mm; the last two values are the (row, column) spacing.
    margin_mm : float
        Padding around the box, in mm.

    Returns
    -------
    Roi

    Raises
    ------
    ValueError
        If the mask is empty: there is no liver to crop around.
    """
    mask = np.asarray(mask)
    if mask.ndim not in (2, 3):
        raise ValueError(f"liver_roi takes a 2-D or 3-D mask, got shape {mask.shape}")
    if margin_mm < 0:
        raise ValueError(f"margin_mm must be >= 0, got {margin_mm!r}")
    footprint = mask.any(axis=0) if mask.ndim == 3 else mask.astype(bool)
    rows_any, cols_any = footprint.any(axis=1), footprint.any(axis=0)
    if not rows_any.any():
        raise ValueError("the liver mask is empty: no liver to crop a region of interest around")
    row_mm, col_mm = (float(s) for s in tuple(spacing)[-2:])
    if row_mm <= 0 or col_mm <= 0:
        raise ValueError(f"spacing must be positive, got {tuple(spacing)!r}")
    n_rows, n_cols = footprint.shape
    r0, r1 = np.flatnonzero(rows_any)[[0, -1]] + (0, 1)
    c0, c1 = np.flatnonzero(cols_any)[[0, -1]] + (0, 1)
    pad_r, pad_c = int(np.ceil(margin_mm / row_mm - 1e-9)), int(np.ceil(margin_mm / col_mm - 1e-9))
    r0, r1, c0, c1 = r0 - pad_r, r1 + pad_r, c0 - pad_c, c1 + pad_c
    side = max(r1 - r0, c1 - c0)
    r0, r1 = _fit(r0, r1, side, n_rows)
    c0, c1 = _fit(c0, c1, side, n_cols)
    return Roi(int(r0), int(r1), int(c0), int(c1), (int(n_rows), int(n_cols)))


def _fit(start: int, stop: int, side: int, n: int) -> tuple[int, int]:
    """Grow [start, stop) to ``side`` around its centre, then move it inside [0, n)."""
    if side >= n:
        return 0, n
    start -= (side - (stop - start)) // 2
    start = min(max(start, 0), n - side)
    return start, start + side


def crop(stack: np.ndarray, roi: Roi) -> np.ndarray:
    """The ROI of every slice: ``stack[..., row0:row1, col0:col1]`` (a view)."""
    stack = np.asarray(stack)
    if tuple(stack.shape[-2:]) != tuple(roi.shape):
        raise ValueError(f"in-plane shape {stack.shape[-2:]} does not match the ROI's image shape {roi.shape}")
    return stack[..., roi.row0 : roi.row1, roi.col0 : roi.col1]


def paste(stack: np.ndarray, roi: Roi, shape: Sequence[int] | None = None, fill: Any = 0) -> np.ndarray:
    """Put ROI-sized slices back on the full image grid (inverse of :func:`crop`).

    Parameters
    ----------
    stack : ndarray, shape (..., roi.height, roi.width)
    roi : Roi
    shape : sequence of int, optional
        Output shape; its last two values must be ``roi.shape``. Default: the
        stack's leading axes followed by ``roi.shape``.
    fill : scalar
        Value outside the ROI (0: background).

    Returns
    -------
    ndarray of the stack's dtype; ``crop(paste(x, roi), roi)`` is ``x`` exactly.
    """
    stack = np.asarray(stack)
    if tuple(stack.shape[-2:]) != (roi.height, roi.width):
        raise ValueError(f"slices of shape {stack.shape[-2:]} do not fit a ROI of {(roi.height, roi.width)}")
    shape = tuple(stack.shape[:-2]) + tuple(roi.shape) if shape is None else tuple(int(s) for s in shape)
    if shape[-2:] != tuple(roi.shape) or shape[:-2] != tuple(stack.shape[:-2]):
        raise ValueError(f"output shape {shape} does not match the stack {stack.shape} and the ROI's image {roi.shape}")
    out = np.full(shape, fill, dtype=stack.dtype)
    out[..., roi.row0 : roi.row1, roi.col0 : roi.col1] = stack
    return out


def square_box(shape: Sequence[int]) -> Roi:
    """Where a slice of in-plane ``shape`` lies on the square it is padded to: centred, side the longer one.

    Examples
    --------
    >>> square_box((60, 90))
    Roi(row0=15, row1=75, col0=0, col1=90, shape=(90, 90))
    """
    rows, cols = (int(s) for s in tuple(shape)[-2:])
    side = max(rows, cols)
    row0, col0 = (side - rows) // 2, (side - cols) // 2
    return Roi(row0, row0 + rows, col0, col0 + cols, (side, side))


def pad_square(stack: np.ndarray, fill: Any) -> np.ndarray:
    """The slices centred on squares with ``fill`` around them (:func:`square_box`); square slices as they are.

    Stage 1 sees whole slices: a non-square field of view (a crop around the liver, a
    resampled export) padded so, not stretched, keeps the anatomy's proportions, which the
    square training slices (LiTS, the phantoms) taught. Pixels are taken as square.
    """
    stack = np.asarray(stack)
    box = square_box(stack.shape)
    if tuple(box.shape) == tuple(stack.shape[-2:]):
        return stack
    return paste(stack, box, fill=fill)
