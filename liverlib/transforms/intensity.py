"""Intensity transforms of CT slices: padding to air, the HU window, histogram equalization (paper 3.2, 3.3)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

HU_WINDOW = (-100.0, 300.0)


AIR_HU = -1024.0


MIN_PADDING_FRACTION = 0.01  # a constant border region smaller than this is left alone


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
    low, high = check_window(hu_window)
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
    low = check_window(hu_window)[0]
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


def check_window(hu_window: Sequence[float]) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in hu_window)
    except (TypeError, ValueError):
        raise ValueError(f"hu_window must be two numbers (low, high), got {hu_window!r}") from None
    if not low < high:
        raise ValueError(f"hu_window must have low < high, got {hu_window!r}")
    return low, high


def check_levels(levels: int) -> np.dtype:
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
    dtype = check_levels(levels)
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
    dtype = check_levels(levels)
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
