"""Preprocessing of CT slices: HU window, slice selection, resize, histogram equalization, liver ROI.

These are the paper's steps (ii) and (iii) (sections 3.2 and 3.3), as functions
over canonical ``(plane, row, column)`` arrays (see :mod:`liverlib.data`).

Order of operations (training and inference alike)::

    padding -> air -> window [-100, 300] HU -> keep the relevant slices -> resize to 96 x 96 -> equalize -> uint8

This is the paper's order: preprocessing (ii) = window, removal of irrelevant
slices and resize, then histogram equalization (iii). Equalizing after the resize
means the histogram is the one of the 96 x 96 image the network sees, so
``L * W`` in the formula is ``96 * 96``; it is also 28 times cheaper than
equalizing 512 x 512 slices. Windowing comes first so that padding values such
as -1024/-3024 HU never bleed into the body through the resampling filter, and
before it :func:`fill_padding` turns padding that the window would keep (0 HU
outside the field of view) into air.

Stage 1 (liver) sees whole slices, resized as they are (LiTS slices are square,
512 x 512; a non-square slice is stretched, and :func:`resize_back` undoes that
exactly). Stage 2 (lesion) sees the liver region of
interest (:func:`liver_roi`) cropped from the windowed slice, resized and
equalized the same way, so its histogram is the one of the liver and its
surroundings. At inference :func:`prepare_volume_stage1` and
:func:`prepare_volume_stage2` run the very same functions on an unlabeled volume,
and :func:`resize_back` / :func:`paste` / :func:`stage2_to_volume` map the 96 x 96
probabilities back onto the original grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

__all__ = [
    "Roi",
    "crop",
    "equalize_histogram",
    "equalize_slices",
    "fill_padding",
    "image_options",
    "liver_roi",
    "paste",
    "prepare_slices",
    "prepare_volume_stage1",
    "prepare_volume_stage2",
    "preprocess_case",
    "resize_back",
    "resize_slices",
    "select_slices",
    "stage2_to_volume",
    "window",
]

HU_WINDOW = (-100.0, 300.0)
AIR_HU = -1024.0
MIN_PADDING_FRACTION = 0.01  # a constant border region smaller than this is left alone
_SELECT_SEED = 0x11FE7  # base seed of the stage-1 negative-slice draw (mixed with the case id)
_HU_DECIMALS = 2  # resampled HU are rounded to 0.01 HU, see prepare_slices


# --------------------------------------------------------------------------- window


def window(image: np.ndarray, hu_window: Sequence[float] = HU_WINDOW) -> np.ndarray:
    """Clip CT intensities to a HU window.

    Parameters
    ----------
    image : ndarray
        CT intensities in HU, any shape.
    hu_window : (float, float)
        ``(low, high)``; the paper's liver window is ``(-100, 300)`` (section 3.2).

    Returns
    -------
    ndarray of float32, same shape, values in ``[low, high]``.
    """
    low, high = _check_window(hu_window)
    # One pass into a new float32 array: the caller's volume is never modified.
    image = np.asarray(image)
    out = np.clip(image, np.float32(low), np.float32(high))
    return out.astype(np.float32, copy=False)


def fill_padding(
    slices: np.ndarray, hu_window: Sequence[float] = HU_WINDOW, air: float = AIR_HU
) -> np.ndarray:
    """Set the padding outside a scanner's circular field of view to air.

    Scanners write one constant value outside the reconstructed circle: mostly
    -1024, -2048 or -3024 HU, which the window maps to its low end like air,
    but some write 0 HU, which falls inside the liver window and looks like a
    uniform organ filling the corners (the phantom cohort has such scans; a
    network that never saw one segments the corners as liver). The padding is
    found per slice as the pixels that touch the image border and hold exactly
    the value of one of its four corners: real tissue and air are noisy, so no
    region of them is exactly constant. Only values above the window's low end
    are replaced; the others already look like air after windowing.

    Parameters
    ----------
    slices : ndarray, shape (planes, rows, columns)
        Whole slices in HU (not ROI crops: the corners must be the image's).
    hu_window : (float, float)
        Padding at or below ``hu_window[0]`` is left as it is.
    air : float
        The value written instead, -1024 HU.

    Returns
    -------
    ndarray
        ``slices`` itself when no slice has such padding (the common case: one
        comparison per corner and slice), otherwise a copy with the padding set
        to ``air``.
    """
    slices = np.asarray(slices)
    if slices.ndim != 3:
        raise ValueError(f"expected (planes, rows, columns) slices, got shape {slices.shape}")
    low = _check_window(hu_window)[0]
    corners = slices[:, [0, 0, -1, -1], [0, -1, 0, -1]]  # (planes, 4)
    out = slices
    border = np.zeros(slices.shape[1:], dtype=bool)
    border[[0, -1], :] = border[:, [0, -1]] = True
    min_pixels = MIN_PADDING_FRACTION * slices.shape[1] * slices.shape[2]
    for plane in np.flatnonzero((corners > low).any(axis=1)):
        for value in np.unique(corners[plane][corners[plane] > low]):
            same = slices[plane] == value
            padding = ndimage.binary_propagation(same & border, mask=same)  # 4-connected to the border
            if padding.sum() >= min_pixels:
                if out is slices:
                    out = slices.copy()
                out[plane][padding] = air
    return out


def _check_window(hu_window: Sequence[float]) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in hu_window)
    except (TypeError, ValueError):
        raise ValueError(f"hu_window must be two numbers (low, high), got {hu_window!r}") from None
    if not low < high:
        raise ValueError(f"hu_window must have low < high, got {hu_window!r}")
    return low, high


# --------------------------------------------------------------------------- equalization


def _check_levels(levels: int) -> np.dtype:
    if int(levels) != levels or not 2 <= levels <= 65536:
        raise ValueError(f"levels must be an integer in [2, 65536], got {levels!r}")
    return np.dtype(np.uint8 if levels <= 256 else np.uint16)


def _equalize_from_cdf(cdf: np.ndarray, cdf_min: np.ndarray, n_pixels: int, levels: int) -> np.ndarray:
    """h = round((cdf - cdf_min) / (n - cdf_min) * (S - 1)) in exact integer arithmetic.

    Rounding is half up: ``floor((2 a (S-1) + d) / (2 d))`` with ``a = cdf - cdf_min``
    and ``d = n - cdf_min``. Integers make the result exact (no float ties that
    round differently on different machines). ``d == 0`` (a constant image) gives 0.
    """
    numerator = (cdf - cdf_min).astype(np.int64) * (levels - 1)
    denominator = np.asarray(n_pixels - cdf_min, dtype=np.int64)
    safe = np.maximum(denominator, 1)
    out = (2 * numerator + safe) // (2 * safe)
    return np.where(denominator > 0, out, 0)


def equalize_histogram(image: np.ndarray, levels: int = 256) -> np.ndarray:
    """Histogram equalization of one slice, exactly the paper's formula (section 3.3).

    .. math:: h(x) = \\mathrm{round}\\left(\\frac{cdf(x) - cdf_{min}}{L W - cdf_{min}} (S - 1)\\right)

    where ``L W`` is the number of pixels of the slice (L rows times W columns),
    ``S = levels`` the number of gray levels, ``cdf(x)`` the number of pixels whose
    value is ``<= x`` and ``cdf_min`` the smallest non-zero cdf value, i.e. the
    number of pixels at the slice's minimum.

    The formula is applied to the whole slice, as the paper writes it, not to a body
    mask: after windowing, air and everything below -100 HU piles up at exactly
    -100, which is the minimum, so it has ``cdf = cdf_min`` and maps to 0, while
    the whole gray range 1..S-1 is spread over the body's pixels. A body mask would
    change ``L W`` and ``cdf_min`` but not this outcome, and would add a threshold
    that the paper does not have.

    The cdf is taken over the exact values (``np.unique``), without binning, so the
    result is exact for float input. Ties ``.5`` round half up, in exact integer
    arithmetic.

    Parameters
    ----------
    image : ndarray, shape (rows, columns)
        A slice already windowed to the HU window (e.g. with :func:`window`).
    levels : int
        S, the number of output gray levels (256 for uint8).

    Returns
    -------
    ndarray of uint8 (uint16 if ``levels > 256``), same shape, values in ``0..levels-1``.
        A constant slice (``L W == cdf_min``) gives all zeros.

    Examples
    --------
    >>> equalize_histogram(np.array([[-100., -100., 0.], [0., 50., 300.]]), levels=256)
    array([[  0,   0, 128],
           [128, 191, 255]], dtype=uint8)
    """
    dtype = _check_levels(levels)
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"equalize_histogram takes one 2-D slice, got shape {image.shape}; use equalize_slices for a stack")
    if image.size == 0:
        return np.zeros(image.shape, dtype)
    _, inverse, counts = np.unique(image, return_inverse=True, return_counts=True)
    cdf = np.cumsum(counts)
    h = _equalize_from_cdf(cdf, cdf[0], image.size, levels)
    return h[inverse.reshape(image.shape)].astype(dtype)


def equalize_slices(stack: np.ndarray, levels: int = 256) -> np.ndarray:
    """:func:`equalize_histogram` applied to every slice of a stack, vectorized.

    Each slice gets its own histogram (the paper's ``L W`` is one slice). All
    slices are sorted at once; for a sorted row the cdf of a value is one past the
    last position holding that value, which a reversed running minimum finds
    without a Python loop over slices.

    Parameters
    ----------
    stack : ndarray, shape (planes, rows, columns)
    levels : int

    Returns
    -------
    ndarray of uint8 (uint16 if ``levels > 256``), same shape.
    """
    dtype = _check_levels(levels)
    stack = np.asarray(stack)
    if stack.ndim != 3:
        raise ValueError(f"equalize_slices takes a (planes, rows, columns) stack, got shape {stack.shape}")
    n, rows, cols = stack.shape
    n_pixels = rows * cols
    if n == 0 or n_pixels == 0:
        return np.zeros(stack.shape, dtype)
    flat = stack.reshape(n, n_pixels)
    # Ties may come in any order (equal values share one cdf); "stable" is a radix sort for
    # <= 16-bit integers, the fastest choice there, and quicksort is faster for the rest.
    small_int = flat.dtype.kind in "iub" and flat.dtype.itemsize <= 2
    order = np.argsort(flat, axis=1, kind="stable" if small_int else None)
    ordered = np.take_along_axis(flat, order, axis=1)
    positions = np.arange(1, n_pixels + 1, dtype=np.int64)
    # A position ends a run of equal values where the next value differs (or at the end).
    run_end = np.ones((n, n_pixels), dtype=bool)
    run_end[:, :-1] = ordered[:, 1:] != ordered[:, :-1]
    ends = np.where(run_end, positions, n_pixels)
    cdf = np.minimum.accumulate(ends[:, ::-1], axis=1)[:, ::-1]
    h = _equalize_from_cdf(cdf, cdf[:, :1], n_pixels, levels)
    out = np.empty((n, n_pixels), dtype)
    np.put_along_axis(out, order, h.astype(dtype), axis=1)
    return out.reshape(stack.shape)


# --------------------------------------------------------------------------- slice selection


def select_slices(
    label: np.ndarray,
    stage: int,
    negative_fraction: float = 0.25,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Planes to keep for training: removal of the slices irrelevant to the liver.

    Stage 1 (liver) keeps every slice that contains liver (labels 1 or 2) plus
    slices without liver, so that the network learns to answer "no liver"; their
    number is ``negative_fraction`` of the kept slices, i.e.
    ``round(n_liver * f / (1 - f))``, or all liver-free slices if there are fewer.
    Half of them (rounded up) are the liver-free slices nearest to the liver,
    alternating below and above it, where "is there still liver?" is hardest (the
    dome and the tip); the other half are drawn at random from the remaining
    liver-free slices (lungs, pelvis...), so that the answer is also learned
    elsewhere. A volume without liver contributes no stage-1 slice.

    Stage 2 (lesion) keeps the slices that contain liver, with or without lesion:
    the lesion network only ever looks inside a liver found by stage 1.

    Parameters
    ----------
    label : ndarray, shape (planes, rows, columns)
        0 background, 1 liver, 2 lesion.
    stage : {1, 2}
    negative_fraction : float in [0, 1)
        Stage 1: share of the kept slices that have no liver.
    rng : numpy.random.Generator or int or None
        Source of the random half of the negatives; an int is a seed, None means
        seed 0. Same rng state, same selection.

    Returns
    -------
    ndarray of int64, the kept plane indices, sorted.
    """
    label = np.asarray(label)
    if label.ndim != 3:
        raise ValueError(f"select_slices takes a (planes, rows, columns) label volume, got shape {label.shape}")
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 (liver) or 2 (lesion), got {stage!r}")
    if not 0.0 <= float(negative_fraction) < 1.0:
        raise ValueError(f"negative_fraction must be in [0, 1), got {negative_fraction!r}")
    has_liver = label.reshape(label.shape[0], -1).any(axis=1)
    positives = np.flatnonzero(has_liver)
    if stage == 2 or positives.size == 0:
        return positives.astype(np.int64)

    negatives = np.flatnonzero(~has_liver)
    wanted = int(round(positives.size * negative_fraction / (1.0 - negative_fraction)))
    wanted = min(wanted, negatives.size)
    if wanted == 0:
        return positives.astype(np.int64)
    # Distance to the liver's extent; ties (same distance below and above) alternate by plane order.
    low, high = positives[0], positives[-1]
    distance = np.where(negatives < low, low - negatives, negatives - high)
    nearest_first = negatives[np.lexsort((negatives, distance))]
    n_near = (wanted + 1) // 2
    near, rest = nearest_first[:n_near], nearest_first[n_near:]
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(0 if rng is None else rng)
    far = generator.choice(rest, size=wanted - n_near, replace=False) if wanted > n_near else rest[:0]
    return np.sort(np.concatenate([positives, near, far])).astype(np.int64)


# --------------------------------------------------------------------------- resize


def _size2(size: int | Sequence[int]) -> tuple[int, int]:
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


def _nearest_planes(volume: np.ndarray, planes: np.ndarray, size: int | Sequence[int]) -> np.ndarray:
    """``resize_slices(volume[planes], size, order=0)`` in one gather, without copying whole slices."""
    out_rows, out_cols = _size2(size)
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
    shape = _size2(size)
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
    return resize_slices(prob_stack, _size2(tuple(shape)[-2:]), order)


# --------------------------------------------------------------------------- liver ROI


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


# --------------------------------------------------------------------------- image pipeline


def image_options(preprocess_cfg: dict) -> dict:
    """The keys of a ``preprocess`` config section that :func:`prepare_slices` takes."""
    return {k: preprocess_cfg[k] for k in ("hu_window", "size", "levels", "equalize") if k in preprocess_cfg}


def prepare_slices(
    slices: np.ndarray,
    hu_window: Sequence[float] = HU_WINDOW,
    size: int = 96,
    levels: int = 256,
    equalize: bool = True,
) -> np.ndarray:
    """HU slices -> network input: window, resize, equalize, as uint8 gray levels.

    The one image path of training and inference. After the (linear) resize the
    HU values are rounded to 0.01 HU: resampling a constant region returns it up
    to float round-off (-99.99999 instead of -100), and without the rounding the
    equalization would see the air outside the body as many distinct values
    instead of one (its ``cdf_min``), and would turn most of the air gray.

    Parameters
    ----------
    slices : ndarray, shape (planes, rows, columns)
        HU, already cropped to what the network should see (whole slices or a ROI).
    hu_window, size, levels
        As in :func:`window`, :func:`resize_slices`, :func:`equalize_histogram`.
    equalize : bool
        True: the paper's histogram equalization per slice. False: the window
        mapped linearly onto ``0..levels-1`` (an ablation).

    Returns
    -------
    ndarray of uint8, shape (planes, size, size): gray levels ``0..levels-1``.
    """
    low, high = _check_window(hu_window)
    dtype = _check_levels(levels)
    x = resize_slices(window(slices, (low, high)), size, order=1)
    # Quantize to 0.01 HU steps above the window's low end. Equalization depends only on
    # the order and ties of the values, so equalizing these integer codes is equalizing
    # the rounded HU exactly; 16-bit codes also sort by radix, 10x faster than floats.
    steps = max(int(round((high - low) * 10**_HU_DECIMALS)), 1)
    codes = np.rint((x - low) * (steps / (high - low)), out=x)
    np.clip(codes, 0, steps, out=codes)
    codes = codes.astype(np.uint16 if steps <= np.iinfo(np.uint16).max else np.uint32)
    if equalize:
        return equalize_slices(codes, levels)
    return ((codes.astype(np.int64) * (2 * (levels - 1)) + steps) // (2 * steps)).astype(dtype)


def prepare_volume_stage1(
    image: np.ndarray,
    hu_window: Sequence[float] = HU_WINDOW,
    size: int = 96,
    levels: int = 256,
    equalize: bool = True,
) -> np.ndarray:
    """Stage-1 network input for every slice of a volume (inference).

    Returns
    -------
    ndarray of uint8, shape (planes, size, size). Map the liver probabilities back
    with ``resize_back(prob, image.shape[1:])``.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"expected a (planes, rows, columns) volume, got shape {image.shape}")
    return prepare_slices(fill_padding(image, hu_window), hu_window, size, levels, equalize)


def prepare_volume_stage2(
    image: np.ndarray,
    liver_mask: np.ndarray,
    spacing: Sequence[float],
    hu_window: Sequence[float] = HU_WINDOW,
    size: int = 96,
    levels: int = 256,
    equalize: bool = True,
    roi_margin_mm: float = 10.0,
) -> tuple[np.ndarray, np.ndarray, Roi]:
    """Stage-2 network input from a (predicted or reference) liver mask (inference).

    Parameters
    ----------
    image : ndarray, (planes, rows, columns), HU
    liver_mask : ndarray, same shape, non-zero = liver
    spacing : (float, float, float), mm

    Returns
    -------
    x : ndarray of uint8, shape (n, size, size)
        The ROI of each slice that contains liver.
    planes : ndarray of int64, shape (n,)
        Their plane indices.
    roi : Roi
        Map the lesion probabilities back with :func:`stage2_to_volume`.

    Raises
    ------
    ValueError
        If the liver mask is empty.
    """
    image, liver_mask = np.asarray(image), np.asarray(liver_mask)
    if image.shape != liver_mask.shape or image.ndim != 3:
        raise ValueError(f"image {image.shape} and liver mask {liver_mask.shape} must be the same 3-D shape")
    roi = liver_roi(liver_mask, spacing, roi_margin_mm)
    planes = np.flatnonzero(liver_mask.reshape(liver_mask.shape[0], -1).any(axis=1)).astype(np.int64)
    x = prepare_slices(crop(fill_padding(image[planes], hu_window), roi), hu_window, size, levels, equalize)
    return x, planes, roi


def stage2_to_volume(prob: np.ndarray, planes: np.ndarray, roi: Roi, n_planes: int, order: int = 1) -> np.ndarray:
    """Stage-2 outputs (n, size, size) -> a (n_planes, rows, columns) float32 volume, 0 outside."""
    prob = np.asarray(prob)
    if prob.shape[0] != len(planes):
        raise ValueError(f"{prob.shape[0]} outputs for {len(planes)} planes")
    back = resize_back(prob, (roi.height, roi.width), order=order).astype(np.float32, copy=False)
    out = np.zeros((int(n_planes), *roi.shape), np.float32)
    out[np.asarray(planes)] = paste(back, roi)
    return out


# --------------------------------------------------------------------------- one case


def preprocess_case(
    case,
    hu_window: Sequence[float] = HU_WINDOW,
    size: int = 96,
    levels: int = 256,
    equalize: bool = True,
    negative_fraction: float = 0.25,
    roi_margin_mm: float = 10.0,
    workers: int | None = None,
) -> dict[str, np.ndarray]:
    """The slice-cache content of one labelled case (both stages).

    Parameters
    ----------
    case : liverlib.data.Case
        Canonical image (HU), label {0, 1, 2}, spacing and case id.
    hu_window, size, levels, equalize, negative_fraction, roi_margin_mm
        The ``preprocess`` section of the profile (``**config["preprocess"]``).
    workers : int, optional
        Ignored here (it is the cache build's parallelism); accepted so that the
        whole config section can be passed.

    Returns
    -------
    dict of ndarray
        ``stage1_x`` (n1, size, size) uint8: windowed, resized, equalized slices;
        ``stage1_y`` (n1, size, size) uint8 {0, 1}: liver (labels 1 and 2);
        ``stage1_z`` (n1,) int64: their plane indices (:func:`select_slices`, stage 1);
        ``stage2_x`` (n2, size, size) uint8: the liver ROI of each liver slice;
        ``stage2_y`` (n2, size, size) uint8 {0, 1}: lesion (label 2) in that ROI;
        ``stage2_z`` (n2,) int64; ``roi`` (6,) int64: :meth:`Roi.to_array`, -1 if no liver.
        The negative-slice draw is seeded by the case id, so the content is a
        function of the case and the config only.
    """
    del workers
    if case.label is None:
        raise ValueError(f"case {case.case_id} has no segmentation; preprocess_case needs labels")
    image, label = case.image, case.label
    if image.shape != label.shape or image.ndim != 3:
        raise ValueError(f"case {case.case_id}: image {image.shape} and label {label.shape} must be the same 3-D shape")
    image = fill_padding(image, hu_window)
    opts = dict(hu_window=hu_window, size=size, levels=levels, equalize=equalize)
    rng = np.random.default_rng([_SELECT_SEED, int(case.case_id)])
    z1 = select_slices(label, 1, negative_fraction, rng)
    x1 = prepare_slices(image[z1], **opts)
    y1 = (_nearest_planes(label, z1, size) > 0).view(np.uint8)

    z2 = select_slices(label, 2)
    if z2.size:
        roi = liver_roi(label[z2] > 0, case.spacing, roi_margin_mm)
        x2 = prepare_slices(crop(image, roi)[z2], **opts)  # crop first: copy only the ROI
        y2 = (_nearest_planes(crop(label, roi), z2, size) == 2).view(np.uint8)
        roi_array = roi.to_array()
    else:
        rows, cols = _size2(size)
        x2 = np.zeros((0, rows, cols), np.uint8)
        y2 = np.zeros((0, rows, cols), np.uint8)
        roi_array = NO_ROI.copy()
    return {
        "stage1_x": np.ascontiguousarray(x1, dtype=np.uint8),
        "stage1_y": np.ascontiguousarray(y1, dtype=np.uint8),
        "stage1_z": z1.astype(np.int64),
        "stage2_x": np.ascontiguousarray(x2, dtype=np.uint8),
        "stage2_y": np.ascontiguousarray(y2, dtype=np.uint8),
        "stage2_z": z2.astype(np.int64),
        "roi": roi_array,
    }
