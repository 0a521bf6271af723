"""The 3D fully connected CRF of the paper's step (vii), run on a network's probabilities.

A dense CRF (Krähenbühl and Koltun, NIPS 2011) on 3-D volumes, as Christ et al.
(MICCAI 2016) used for the liver. For labels ``x`` of voxels ``i`` at positions
``p_i`` (mm) with CT values ``I_i`` (HU) the energy is::

    E(x) = sum_i -log P_i(x_i)
         + sum_{i<j} [x_i != x_j] * ( pos_weight * exp(-|p_i - p_j|^2 / (2 pos_sigma_mm^2))
                                    + bilateral_weight * exp(-|p_i - p_j|^2 / (2 bilateral_sigma_mm^2)
                                                             -|I_i - I_j|^2 / (2 bilateral_sigma_hu^2)) )

with ``P`` clipped to ``[clip, 1]``. The smoothness kernel removes small isolated
regions; the appearance kernel pulls the boundary onto the organ's contrast
edge. Kernels are in mm and HU, so a scan's spacing counts as it is. Mean-field
inference (pydensecrf) is deterministic. It runs on a box around the organ (the
thresholded result holds outside it); a box over ``MAX_VOXELS`` (~175 bytes per
voxel) is downsampled in-plane by an integer factor and its marginals
interpolated back. Default parameters: the ``crf`` section of ``profiles.yaml``.
How they were chosen, and the CRF's measured cost: see docs/experiments.md.

The two-stage label rule (:func:`refine_labels`, :func:`lesions_in_liver`) lives
in :mod:`liverlib.inference.labels` and is reachable from here too.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_softmax

from liverlib.config import defaults
from liverlib.inference.crf_grid import block_mean, downsample_factor, grid_factor, plane_factor, upsample
from liverlib.transforms.morphology import bounding_box

#: Christ et al. 2016's liver CRF (their public code, mbickel/DenseInferenceWrapper) in mm and HU; for comparison.
CHRIST2016: dict[str, float | int] = {
    "iterations": 10,
    "pos_sigma_mm": 1.5,
    "pos_weight": 3.0,
    "bilateral_sigma_mm": 9.0,
    "bilateral_sigma_hu": 20.0 * 500.0 / 255.0,  # 39.2 HU: 20 of [0, 255] mapped from [-100, 400] HU
    "bilateral_weight": 10.0,
}

#: Largest box (voxels) the CRF runs on at full resolution; ~175 bytes per voxel.
MAX_VOXELS = 16_000_000

#: Automatic box: voxels with at least this probability may be foreground.
ROI_THRESHOLD = 0.05
#: Automatic box padding, several ``pos_sigma_mm``; beyond it the unary -log(0.05) = 3 nats keeps background.
ROI_MARGIN_MM = 10.0
CLIP = 1e-5

Roi = tuple[slice, ...]


def profile_defaults(**params: Any) -> dict[str, Any]:
    """``params`` with every ``None`` replaced by the base profile's ``crf`` value.

    Examples
    --------
    >>> profile_defaults(iterations=None, pos_weight=0.0)
    {'iterations': 5, 'pos_weight': 0.0}
    """
    if all(value is not None for value in params.values()):
        return params
    section = defaults("crf")
    return {name: section[name] if value is None else value for name, value in params.items()}


# ----------------------------------------------------------------------------- features


def pairwise_features(
    shape: Sequence[int],
    spacing: Sequence[float],
    sigma_mm: float,
    image: np.ndarray | None = None,
    sigma_hu: float | None = None,
) -> np.ndarray:
    """Kernel features of every voxel: position in mm / sigma, optionally HU / sigma.

    Parameters
    ----------
    shape : sequence of int
        The grid, (plane, row, column).
    spacing : sequence of float
        mm per voxel along each axis.
    sigma_mm : float
        Spatial standard deviation of the Gaussian kernel, in mm.
    image : ndarray, optional
        HU values of the grid; adds the intensity feature (bilateral kernel).
    sigma_hu : float, optional
        Intensity standard deviation in HU; required with ``image``.

    Returns
    -------
    ndarray of float32, shape (ndim [+1], n_voxels)
        C-contiguous, C (row-major) voxel order, as pydensecrf expects. Row ``a``
        holds ``index_a * spacing[a] / sigma_mm``; the last row, with ``image``,
        holds ``image / sigma_hu``.
    """
    shape = tuple(int(s) for s in shape)
    if len(spacing) != len(shape):
        raise ValueError(f"spacing has {len(spacing)} values for a {len(shape)}-D grid")
    n_features = len(shape) + (image is not None)
    feats = np.empty((n_features,) + shape, dtype=np.float32)
    for axis, (size, step) in enumerate(zip(shape, spacing)):
        view = [1] * len(shape)
        view[axis] = size
        # Broadcast one 1-D ramp instead of a float64 meshgrid: 4 bytes per voxel and feature.
        feats[axis] = (np.arange(size, dtype=np.float32) * np.float32(step / sigma_mm)).reshape(view)
    if image is not None:
        if sigma_hu is None:
            raise ValueError("sigma_hu is required with image")
        if tuple(image.shape) != shape:
            raise ValueError(f"image shape {image.shape} does not match grid {shape}")
        np.divide(image, np.float32(sigma_hu), out=feats[-1], casting="unsafe")
    return feats.reshape(n_features, -1)


# ----------------------------------------------------------------------------- checks


def _check_positive(name: str, value: float, allow_zero: bool = False) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value}")
    return value


def check_inputs(image, prob, spacing) -> tuple[np.ndarray, np.ndarray, tuple[float, ...], bool]:
    """Validate a CT, its probabilities and spacing; return them as arrays, a float tuple and ``multiclass``."""
    image = np.asarray(image)
    prob = np.asarray(prob)
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be a 2-D or 3-D array (plane, row, column), got shape {image.shape}")
    if image.size == 0:
        raise ValueError(f"image is empty (shape {image.shape})")
    if prob.shape == image.shape:
        multiclass = False
    elif prob.ndim == image.ndim + 1 and prob.shape[1:] == image.shape:
        multiclass = True
        if prob.shape[0] < 2:
            raise ValueError(f"a multi-class prob needs at least 2 classes on axis 0, got shape {prob.shape}")
    else:
        raise ValueError(
            f"prob shape {prob.shape} does not match image shape {image.shape}: give a foreground "
            f"probability of shape {image.shape} or class probabilities of shape (n_classes, "
            f"{', '.join(map(str, image.shape))})"
        )
    if not np.issubdtype(prob.dtype, np.floating):
        raise ValueError(f"prob must hold floating-point probabilities in [0, 1], got dtype {prob.dtype}")
    spacing = tuple(float(s) for s in np.ravel(spacing))
    if len(spacing) != image.ndim:
        raise ValueError(f"spacing has {len(spacing)} values for a {image.ndim}-D image")
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be positive mm values, got {spacing}")
    return image, prob, spacing, multiclass


def _check_kernels(
    iterations, pos_sigma_mm, pos_weight, bilateral_sigma_mm, bilateral_sigma_hu, bilateral_weight
) -> dict[str, Any]:
    """The mean-field settings, validated: whole iterations, positive sigmas, non-negative weights."""
    iterations_f = _check_positive("iterations", iterations, allow_zero=True)
    if iterations_f != int(iterations_f):
        raise ValueError(f"iterations must be a whole number, got {iterations}")
    return {
        "iterations": int(iterations_f),
        "pos_sigma_mm": _check_positive("pos_sigma_mm", pos_sigma_mm),
        "pos_weight": _check_positive("pos_weight", pos_weight, allow_zero=True),
        "bilateral_sigma_mm": _check_positive("bilateral_sigma_mm", bilateral_sigma_mm),
        "bilateral_sigma_hu": _check_positive("bilateral_sigma_hu", bilateral_sigma_hu),
        "bilateral_weight": _check_positive("bilateral_weight", bilateral_weight, allow_zero=True),
    }


def _check_settings(roi_margin_mm, threshold, roi_threshold, clip, max_voxels) -> float:
    """Validate the box and unary settings; return ``roi_margin_mm`` as a float."""
    roi_margin_mm = _check_positive("roi_margin_mm", roi_margin_mm, allow_zero=True)
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
    if not 0 < roi_threshold < 1:
        raise ValueError(f"roi_threshold must lie in (0, 1), got {roi_threshold}")
    if not 0 < clip < 0.5:
        raise ValueError(f"clip must lie in (0, 0.5), got {clip}")
    if int(max_voxels) < 1:
        raise ValueError(f"max_voxels must be positive, got {max_voxels}")
    return roi_margin_mm


def _check_probabilities(prob: np.ndarray) -> None:
    lo, hi = float(prob.min()), float(prob.max())  # NaN propagates into both
    if math.isnan(lo) or math.isnan(hi) or lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"prob must hold probabilities in [0, 1], found values in [{lo:g}, {hi:g}] (or NaN)")


def _check_roi(roi, shape: tuple[int, ...]) -> Roi:
    if not isinstance(roi, tuple) or len(roi) != len(shape) or not all(isinstance(s, slice) for s in roi):
        raise ValueError(f"roi must be a tuple of {len(shape)} slices, got {roi!r}")
    out = []
    for s, size in zip(roi, shape):
        start, stop, step = s.indices(size)
        if step != 1 or stop <= start:
            raise ValueError(f"roi {roi!r} is empty or strided for shape {shape}")
        out.append(slice(start, stop))
    return tuple(out)


# ----------------------------------------------------------------------------- inference


def _mean_field(
    image: np.ndarray,
    probs: np.ndarray,
    spacing: tuple[float, ...],
    iterations: int,
    pos_sigma_mm: float,
    pos_weight: float,
    bilateral_sigma_mm: float,
    bilateral_sigma_hu: float,
    bilateral_weight: float,
    clip: float,
    log_prior: np.ndarray | None,
) -> np.ndarray:
    """Mean-field marginals ``Q`` (n_labels, *image.shape) of the dense CRF on one grid.

    pydensecrf's N-D ``DenseCRF``, Potts compatibility, symmetric kernel normalization (``DenseCRF2D``'s defaults).
    """
    n_labels = probs.shape[0]
    crf = dcrf.DenseCRF(image.size, n_labels)
    unary = unary_from_softmax(probs, clip=clip)
    if log_prior is not None:
        unary += log_prior[:, None]
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    del unary
    kernel = {"kernel": dcrf.DIAG_KERNEL, "normalization": dcrf.NORMALIZE_SYMMETRIC}
    if pos_weight > 0:
        feats = pairwise_features(image.shape, spacing, pos_sigma_mm)
        crf.addPairwiseEnergy(feats, compat=float(pos_weight), **kernel)
        del feats
    if bilateral_weight > 0:
        feats = pairwise_features(image.shape, spacing, bilateral_sigma_mm, image, bilateral_sigma_hu)
        crf.addPairwiseEnergy(feats, compat=float(bilateral_weight), **kernel)
        del feats
    q = np.asarray(crf.inference(int(iterations)), dtype=np.float32)
    return q.reshape((n_labels,) + image.shape)


def _auto_roi(prob, labels, multiclass: bool, spacing, roi_threshold: float, roi_margin_mm: float) -> Roi:
    """Box of possible foreground (``>= roi_threshold``) and of the thresholded labels, padded in mm."""
    score = prob[1:].max(axis=0) if multiclass else prob
    return bounding_box((score >= roi_threshold) | (labels > 0), roi_margin_mm, spacing)


def _box_inputs(image, prob, box: Roi, multiclass: bool):
    """The box's float32 image and probabilities: ``(n_labels, ...)`` classes, or the binary foreground."""
    image_box = np.asarray(image[box], dtype=np.float32)
    if not np.isfinite(image_box).all():
        raise ValueError("image holds NaN or infinite values inside the CRF region")
    index = (slice(None),) + box if multiclass else box
    return image_box, np.asarray(prob[index], dtype=np.float32)


def _box_marginals(image, prob, box: Roi, spacing, multiclass: bool, *, threshold, clip, max_voxels, grid_mm,
                   grid_z_mm, kernels):
    """CRF marginals on ``box``: ``(n_labels, ...)``, or the foreground's alone for binary input.

    The box is block-averaged in-plane to ``grid_mm`` or to fit ``max_voxels``,
    and through-plane to ``grid_z_mm``, and the marginals are interpolated back
    to it. Binary input resamples one channel each way (background is one minus foreground).
    """
    image_box, prob_box = _box_inputs(image, prob, box, multiclass)
    box_shape = image_box.shape
    fz = plane_factor(spacing, grid_z_mm) if image_box.ndim == 3 else 1
    coarse_shape = (math.ceil(box_shape[0] / fz),) + box_shape[1:] if fz > 1 else box_shape
    factor = max(downsample_factor(coarse_shape, max_voxels), grid_factor(spacing, grid_mm))
    if factor > 1 or fz > 1:
        image_box = block_mean(image_box, factor, fz)
        prob_box = block_mean(prob_box, factor, fz)
        spacing = spacing[:-2] + (spacing[-2] * factor, spacing[-1] * factor)
        if fz > 1:
            spacing = spacing[:-3] + (spacing[-3] * fz,) + spacing[-2:]
    log_prior = None
    if not multiclass:
        prob_box = np.stack([1 - prob_box, prob_box])
        # The prior log(t), log(1 - t) makes the CRF without pairwise terms reproduce prob >= t; neutral at 0.5.
        if threshold != 0.5:
            log_prior = np.log(np.array([1 - threshold, threshold], dtype=np.float32))
    q = _mean_field(
        image_box,
        prob_box,
        spacing,
        kernels["iterations"],
        kernels["pos_sigma_mm"],
        kernels["pos_weight"],
        kernels["bilateral_sigma_mm"],
        kernels["bilateral_sigma_hu"],
        kernels["bilateral_weight"],
        clip,
        log_prior,
    )
    del image_box, prob_box
    if not multiclass:
        q = q[1]
    return upsample(q, factor, box_shape, fz) if factor > 1 or fz > 1 else q


def _result(labels, prob, multiclass: bool, return_prob: bool, q_box=None, box: Roi | None = None):
    """``labels``, or ``(labels, probability)`` with the CRF's marginals pasted into ``box``."""
    if not return_prob:
        return labels
    out = prob.astype(np.float32, copy=True)
    if q_box is not None:
        out[(slice(None),) + box if multiclass else box] = q_box
    return labels, out


def crf_refine(
    image: np.ndarray,
    prob: np.ndarray,
    spacing: Sequence[float],
    iterations: int | None = None,
    pos_sigma_mm: float | None = None,
    pos_weight: float | None = None,
    bilateral_sigma_mm: float | None = None,
    bilateral_sigma_hu: float | None = None,
    bilateral_weight: float | None = None,
    roi: Roi | None = None,
    *,
    threshold: float = 0.5,
    roi_threshold: float = ROI_THRESHOLD,
    roi_margin_mm: float = ROI_MARGIN_MM,
    clip: float = CLIP,
    max_voxels: int = MAX_VOXELS,
    grid_mm: float = 0.0,
    grid_z_mm: float = 0.0,
    return_prob: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Refine a probability volume with a 3D fully connected CRF; return the MAP labels.

    The CRF parameters left ``None`` take the values of the ``crf`` section of
    the base profile (``liverlib/profiles.yaml``).

    Parameters
    ----------
    image : ndarray, shape (plane, row, column)
        CT in HU (float32 preferred). 2-D (row, column) arrays work too.
    prob : ndarray of float
        Foreground probability in [0, 1] with ``image``'s shape (binary CRF,
        labels background / foreground), or class probabilities of shape
        ``(n_classes,) + image.shape`` (class 0 = background).
    spacing : sequence of float
        mm per voxel along (plane, row, column).
    iterations : int, optional
        Mean-field iterations. 0 returns the thresholded probabilities.
    pos_sigma_mm, pos_weight : float, optional
        Smoothness kernel: spatial standard deviation (mm) and weight.
    bilateral_sigma_mm, bilateral_sigma_hu, bilateral_weight : float, optional
        Appearance kernel: spatial (mm) and intensity (HU) standard deviations
        and weight. A weight of 0 drops the kernel.
    roi : tuple of slices, optional
        Box the CRF runs on. Default: the bounding box of ``prob >=
        roi_threshold`` (binary; any foreground class for multi-class) and of
        the thresholded foreground, padded by ``roi_margin_mm``. Outside the
        box the result is the thresholded probability.
    threshold : float
        Binary case: the decision threshold. Outside the box the label is
        ``prob >= threshold``; inside, the unary energies get the matching
        prior ``log(threshold)``, ``log(1 - threshold)``, so that without
        pairwise terms the CRF reproduces ``prob >= threshold`` (at 0.5 the
        prior is neutral). Ignored for multi-class input (arg-max).
    roi_threshold, roi_margin_mm : float
        Automatic box: probability that counts as "maybe foreground" and the
        padding in mm.
    clip : float
        Probabilities are clipped to ``[clip, 1]`` before ``-log``.
    max_voxels : int
        Largest box run at full resolution; larger boxes are downsampled
        in-plane (rows and columns) by the smallest integer factor that fits,
        and the marginals are interpolated back linearly.
    grid_mm : float
        Coarsest in-plane grid (mm) the CRF may run on: the box is block-averaged
        in-plane by the largest integer factor whose voxels stay within
        ``grid_mm`` (a 0.8 mm scan runs at 1.6 mm for ``grid_mm=2``), and the
        marginals are interpolated back linearly. The cost falls with the
        square of the factor. 0 (default) keeps the scan's own grid.
    grid_z_mm : float
        The same through the planes: the box is block-averaged over the largest
        number of neighbouring planes that stay within ``grid_z_mm`` (a 0.7 mm
        scan runs on 2.8 mm planes for ``grid_z_mm=3``). 0 (default) keeps every plane.
    return_prob : bool
        Also return the CRF's marginal probability: foreground for binary input,
        ``(n_classes, ...)`` for multi-class, equal to ``prob`` outside the box.

    Returns
    -------
    labels : ndarray of uint8, image's shape
        0/1 for binary input, the class index for multi-class input.
    probability : ndarray of float32, optional
        With ``return_prob=True``.

    Raises
    ------
    ValueError
        For an empty image, mismatched shapes, probabilities outside [0, 1],
        a non-finite image in the box, or invalid parameters.

    Notes
    -----
    If the thresholded labelling is constant (for example no probability
    anywhere reaches ``threshold``) it is the exact minimum of the energy
    (every unary term is at its minimum and no pair disagrees), so it is
    returned at once without running the CRF.
    """
    image, prob, spacing, multiclass = check_inputs(image, prob, spacing)
    kernels = _check_kernels(
        **profile_defaults(
            iterations=iterations,
            pos_sigma_mm=pos_sigma_mm,
            pos_weight=pos_weight,
            bilateral_sigma_mm=bilateral_sigma_mm,
            bilateral_sigma_hu=bilateral_sigma_hu,
            bilateral_weight=bilateral_weight,
        )
    )
    roi_margin_mm = _check_settings(roi_margin_mm, threshold, roi_threshold, clip, max_voxels)
    grid_mm = _check_positive("grid_mm", grid_mm, allow_zero=True)
    grid_z_mm = _check_positive("grid_z_mm", grid_z_mm, allow_zero=True)
    _check_probabilities(prob)

    labels = (np.argmax(prob, axis=0) if multiclass else prob >= threshold).astype(np.uint8)
    # A constant labelling minimizes every unary and every pairwise term: it is the exact MAP.
    if labels.min() == labels.max() or kernels["iterations"] == 0:
        return _result(labels, prob, multiclass, return_prob)

    if roi is None:
        box = _auto_roi(prob, labels, multiclass, spacing, roi_threshold, roi_margin_mm)
    else:
        box = _check_roi(roi, image.shape)
    q = _box_marginals(
        image, prob, box, spacing, multiclass, threshold=threshold, clip=clip, max_voxels=max_voxels, grid_mm=grid_mm,
        grid_z_mm=grid_z_mm, kernels=kernels,
    )
    # Binary: q is the foreground marginal; the two marginals sum to 1.
    labels[box] = np.argmax(q, axis=0) if multiclass else q >= 0.5
    return _result(labels, prob, multiclass, return_prob, q, box)
