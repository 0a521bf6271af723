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
512 x 512); a non-square slice is first padded with air to a square
(:func:`~liverlib.transforms.spatial.pad_square`), so that its anatomy keeps its
proportions, and :func:`stage1_to_image` maps the probabilities back. Stage 2
(lesion) sees the liver region of interest (:func:`liver_roi`) cropped from the
windowed slice, resized and
equalized the same way, so its histogram is the one of the liver and its
surroundings. At inference :func:`prepare_volume_stage1` and
:func:`prepare_volume_stage2` run the very same functions on an unlabeled volume,
and :func:`stage1_to_image` / :func:`stage2_to_volume` map the 96 x 96
probabilities back onto the original grid.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from liverlib.transforms.intensity import (
    AIR_HU,
    HU_WINDOW,
    check_levels,
    check_window,
    equalize_slices,
    fill_padding,
    window,
)
from liverlib.transforms.spatial import (
    NO_ROI,
    Roi,
    as_size2,
    crop,
    liver_roi,
    nearest_planes,
    pad_square,
    paste,
    resize_back,
    resize_slices,
    square_box,
)

__all__ = [
    "image_options",
    "prepare_slices",
    "prepare_volume_stage1",
    "prepare_volume_stage2",
    "preprocess_case",
    "select_slices",
    "stage1_to_image",
    "stage2_to_volume",
]

_SELECT_SEED = 0x11FE7  # base seed of the stage-1 negative-slice draw (mixed with the case id)
_HU_DECIMALS = 2  # resampled HU are rounded to 0.01 HU, see prepare_slices


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
    low, high = check_window(hu_window)
    dtype = check_levels(levels)
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
    with :func:`stage1_to_image`.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"expected a (planes, rows, columns) volume, got shape {image.shape}")
    return prepare_slices(pad_square(fill_padding(image, hu_window), AIR_HU), hu_window, size, levels, equalize)


def stage1_to_image(prob: np.ndarray, shape: Sequence[int], order: int = 1) -> np.ndarray:
    """Stage-1 outputs (planes, size, size) back onto slices of in-plane ``shape`` (inverse of the square padding and resize)."""
    box = square_box(shape)
    return np.ascontiguousarray(crop(resize_back(prob, box.shape, order), box))


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
    x1 = prepare_slices(pad_square(image[z1], AIR_HU), **opts)
    y1 = (resize_slices(pad_square(label[z1], 0), size, order=0) > 0).view(np.uint8)  # the planes, not the volume, padded

    z2 = select_slices(label, 2)
    if z2.size:
        roi = liver_roi(label[z2] > 0, case.spacing, roi_margin_mm)
        x2 = prepare_slices(crop(image, roi)[z2], **opts)  # crop first: copy only the ROI
        y2 = (nearest_planes(crop(label, roi), z2, size) == 2).view(np.uint8)
        roi_array = roi.to_array()
    else:
        rows, cols = as_size2(size)
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
