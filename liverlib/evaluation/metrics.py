"""LiTS segmentation metrics over numpy arrays: overlap, surface distances and global Dice.

The definitions follow the Liver Tumor Segmentation Benchmark (Bilic et al.,
"The Liver Tumor Segmentation Benchmark (LiTS)", Medical Image Analysis 2023)
and its public scorer. With X the prediction and Y the reference:

* Dice  = 2|X ∩ Y| / (|X| + |Y|)
* VOE   = 1 - |X ∩ Y| / |X ∪ Y|                  (volumetric overlap error)
* RVD   = (|X| - |Y|) / |Y|                       (relative volume difference, signed:
  negative means under-segmentation; the scorer's code calls medpy's
  ``ravd(reference, prediction)``, which swaps the two, so its RVD is
  ``(|Y| - |X|) / |X|``: this module keeps the published definition)
* ASSD  = mean of the distances from every surface voxel of X to the surface of Y
  and from every surface voxel of Y to the surface of X, in mm
* MSD   = maximum of those distances, in mm (maximum symmetric surface distance,
  the Hausdorff distance between the two surfaces)

Surfaces are the mask minus its binary erosion, as in the LiTS scorer (medpy
``Surface.compute_contour``): the erosion uses scipy's connectivity rank
``ndim - 1``, i.e. the 18-neighbourhood in 3-D (a voxel is on the surface when
a face- or edge-neighbour is background). Outside the array counts as
background. Distances come from ``scipy.ndimage.distance_transform_edt`` with
``sampling=spacing``, which equals the scorer's nearest-surface-voxel search.

Empty masks
-----------
The LiTS conventions, also in :data:`CONVENTIONS`:

===================  =====  =====  ========  ======  ======
case                 dice   voe    rvd       assd    msd
===================  =====  =====  ========  ======  ======
both empty           1      0      0         0       0
reference empty      0      1      nan       nan     nan
prediction empty     0      1      -1        nan     nan
===================  =====  =====  ========  ======  ======

A case with no lesion in either the reference or the prediction scores lesion
Dice 1.0, as the LiTS scorer's per-case Dice does. RVD is undefined (nan) when
the reference is empty, since it divides by ``|Y|``. ASSD and MSD are undefined
(nan) when exactly one mask is empty: there is no surface to measure to. (The
LiTS scorer puts a sentinel of 9001 there; a nan keeps means honest.) Tables
skip these nans and report how many there were.

Global Dice
-----------
The LiTS "Dice global" pools the counts of all cases:
``2·Σ|X∩Y| / Σ(|X|+|Y|)``. Accumulate :func:`dice_counts` per case and pass
them to :func:`global_dice`.

Example
-------
>>> import numpy as np
>>> from liverlib.evaluation.metrics import dice, rvd
>>> ref = np.zeros((4, 4), bool); ref[1:3, 1:3] = True
>>> pred = np.zeros((4, 4), bool); pred[1:3, 1:2] = True
>>> float(dice(pred, ref)), float(rvd(pred, ref))
(0.6666666666666666, -0.5)
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from liverlib.transforms.morphology import bounding_box

__all__ = [
    "CONVENTIONS",
    "dice",
    "voe",
    "rvd",
    "assd",
    "msd",
    "surface_distances",
    "segmentation_scores",
    "dice_counts",
    "global_dice",
]

_NAN = float("nan")

#: What each metric is when a mask is empty (see the module docstring).
CONVENTIONS: dict[str, dict[str, float]] = {
    "both_empty": {"dice": 1.0, "voe": 0.0, "rvd": 0.0, "assd": 0.0, "msd": 0.0},
    "reference_empty": {"dice": 0.0, "voe": 1.0, "rvd": _NAN, "assd": _NAN, "msd": _NAN},
    "prediction_empty": {"dice": 0.0, "voe": 1.0, "rvd": -1.0, "assd": _NAN, "msd": _NAN},
}

# Margin of the crop around the union of both masks. The crop is exact without
# it (all surface voxels lie inside the union box); one voxel keeps the erosion
# and the distance transforms well away from the crop's edge.
_CROP_MARGIN = 1


# --------------------------------------------------------------------------- input checks


def _as_masks(pred, ref) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"pred and ref must have the same shape, got pred {pred.shape} and ref {ref.shape}")
    if pred.ndim == 0:
        raise ValueError("pred and ref must be arrays with at least one axis, got scalars")
    return pred.astype(bool, copy=False), ref.astype(bool, copy=False)


def _as_spacing(spacing, ndim: int) -> np.ndarray:
    if spacing is None:
        return np.ones(ndim)
    values = np.asarray(spacing, dtype=np.float64).ravel()
    if values.size != ndim:
        raise ValueError(f"spacing needs one voxel size per axis ({ndim}), got {tuple(values)}")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"spacing must be positive and finite (mm per voxel), got {tuple(values)}")
    return values


def _crop_pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to their union's bounding box plus a margin (nothing is lost)."""
    box = bounding_box(pred | ref, margin=_CROP_MARGIN)
    if box is None:
        return pred[(slice(0, 0),) * pred.ndim], ref[(slice(0, 0),) * ref.ndim]
    return pred[box], ref[box]


# --------------------------------------------------------------------------- overlap metrics


def dice_counts(pred, ref) -> tuple[int, int, int]:
    """The voxel counts behind Dice, to pool over cases for the global Dice.

    Parameters
    ----------
    pred, ref : array_like of bool, same shape

    Returns
    -------
    intersection, pred_voxels, ref_voxels : int
        ``|X ∩ Y|``, ``|X|`` and ``|Y|``.
    """
    pred, ref = _as_masks(pred, ref)
    return (
        int(np.count_nonzero(pred & ref)),
        int(np.count_nonzero(pred)),
        int(np.count_nonzero(ref)),
    )


def _dice(inter: int, n_pred: int, n_ref: int) -> float:
    if n_pred + n_ref == 0:
        return CONVENTIONS["both_empty"]["dice"]
    return 2.0 * inter / (n_pred + n_ref)


def _voe(inter: int, n_pred: int, n_ref: int) -> float:
    union = n_pred + n_ref - inter
    if union == 0:
        return CONVENTIONS["both_empty"]["voe"]
    return 1.0 - inter / union


def _rvd(n_pred: int, n_ref: int) -> float:
    if n_ref == 0:
        return CONVENTIONS["both_empty" if n_pred == 0 else "reference_empty"]["rvd"]
    return (n_pred - n_ref) / n_ref


def dice(pred, ref, spacing=None) -> float:
    """Dice coefficient ``2|X ∩ Y| / (|X| + |Y|)``.

    Parameters
    ----------
    pred, ref : array_like of bool, same shape
        Prediction X and reference Y; nonzero means inside.
    spacing : sequence of float, optional
        Voxel size in mm per axis. Dice does not depend on it (the voxel volume
        cancels); it is accepted so that all metrics share one signature.

    Returns
    -------
    float
        In [0, 1]; 1.0 when both masks are empty (LiTS convention).

    Raises
    ------
    ValueError
        If the shapes differ or ``spacing`` is malformed.
    """
    pred, ref = _as_masks(pred, ref)
    _as_spacing(spacing, pred.ndim)
    return _dice(*dice_counts(pred, ref))


def voe(pred, ref, spacing=None) -> float:
    """Volumetric overlap error ``1 - |X ∩ Y| / |X ∪ Y|``.

    Parameters
    ----------
    pred, ref : array_like of bool, same shape
    spacing : sequence of float, optional
        Accepted for a uniform signature; VOE does not depend on it.

    Returns
    -------
    float
        In [0, 1]; 0.0 when both masks are empty, 1.0 when exactly one is.
    """
    pred, ref = _as_masks(pred, ref)
    _as_spacing(spacing, pred.ndim)
    return _voe(*dice_counts(pred, ref))


def rvd(pred, ref, spacing=None) -> float:
    """Relative volume difference ``(|X| - |Y|) / |Y|``, signed.

    Parameters
    ----------
    pred, ref : array_like of bool, same shape
    spacing : sequence of float, optional
        Accepted for a uniform signature; the voxel volume cancels.

    Returns
    -------
    float
        Negative for under-segmentation (-1 for an empty prediction), positive
        for over-segmentation; 0.0 when both masks are empty; nan when only the
        reference is empty (undefined: it divides by ``|Y| = 0``).
    """
    pred, ref = _as_masks(pred, ref)
    _as_spacing(spacing, pred.ndim)
    return _rvd(int(np.count_nonzero(pred)), int(np.count_nonzero(ref)))


# --------------------------------------------------------------------------- surface metrics


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face- or edge-neighbour outside it (LiTS scorer's contour)."""
    structure = ndimage.generate_binary_structure(mask.ndim, max(mask.ndim - 1, 1))
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(pred, ref, spacing=None) -> tuple[np.ndarray, np.ndarray]:
    """Distances in mm between the surfaces of two masks, both ways.

    Both masks are first cropped to the bounding box of their union plus a
    one-voxel margin, so a liver in a 512×512×900 volume costs two distance
    transforms over the liver's box, not over the volume.

    Parameters
    ----------
    pred, ref : array_like of bool, same shape
    spacing : sequence of float, optional
        Voxel size in mm per axis (default 1).

    Returns
    -------
    pred_to_ref : ndarray of float64
        For each surface voxel of ``pred``, the distance to the nearest surface
        voxel of ``ref``.
    ref_to_pred : ndarray of float64
        The same from ``ref`` to ``pred``.
        Both are empty when either mask is empty (nothing to measure).
    """
    pred, ref = _as_masks(pred, ref)
    sampling = _as_spacing(spacing, pred.ndim)
    return _surface_distances(*_crop_pair(pred, ref), sampling)


def _surface_distances(pred: np.ndarray, ref: np.ndarray, sampling: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not pred.any() or not ref.any():
        return np.empty(0), np.empty(0)
    pred_surface = _surface(pred)
    ref_surface = _surface(ref)
    # The EDT of the complement of a surface is, at every voxel, the distance to
    # that surface's nearest voxel; read it at the other surface's voxels.
    to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=sampling)[pred_surface]
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=sampling)[ref_surface]
    return to_ref, to_pred


def _empty_case(n_pred: int, n_ref: int) -> str | None:
    if n_pred == 0 and n_ref == 0:
        return "both_empty"
    if n_ref == 0:
        return "reference_empty"
    if n_pred == 0:
        return "prediction_empty"
    return None


def _assd_msd(pred: np.ndarray, ref: np.ndarray, sampling: np.ndarray) -> tuple[float, float]:
    """ASSD and MSD of already cropped masks, with the empty-mask conventions."""
    empty = _empty_case(int(np.count_nonzero(pred)), int(np.count_nonzero(ref)))
    if empty is not None:
        return CONVENTIONS[empty]["assd"], CONVENTIONS[empty]["msd"]
    to_ref, to_pred = _surface_distances(pred, ref, sampling)
    assd_value = (float(to_ref.sum()) + float(to_pred.sum())) / (to_ref.size + to_pred.size)
    msd_value = max(float(to_ref.max()), float(to_pred.max()))
    return assd_value, msd_value


def assd(pred, ref, spacing=None) -> float:
    """Average symmetric surface distance in mm.

    The mean over the surface voxels of both masks of the distance to the other
    mask's surface: ``(Σ d(x, S_Y) + Σ d(y, S_X)) / (|S_X| + |S_Y|)``.

    Parameters
    ----------
    pred, ref : array_like of bool, same shape
    spacing : sequence of float, optional
        Voxel size in mm per axis (default 1).

    Returns
    -------
    float
        0.0 when both masks are empty; nan when exactly one is (undefined).
    """
    pred, ref = _as_masks(pred, ref)
    sampling = _as_spacing(spacing, pred.ndim)
    return _assd_msd(*_crop_pair(pred, ref), sampling)[0]


def msd(pred, ref, spacing=None) -> float:
    """Maximum symmetric surface distance (surface Hausdorff distance) in mm.

    ``max(max_x d(x, S_Y), max_y d(y, S_X))`` over the surface voxels.

    Parameters
    ----------
    pred, ref : array_like of bool, same shape
    spacing : sequence of float, optional
        Voxel size in mm per axis (default 1).

    Returns
    -------
    float
        0.0 when both masks are empty; nan when exactly one is (undefined).
    """
    pred, ref = _as_masks(pred, ref)
    sampling = _as_spacing(spacing, pred.ndim)
    return _assd_msd(*_crop_pair(pred, ref), sampling)[1]


# --------------------------------------------------------------------------- all metrics of a pair, global Dice


def segmentation_scores(pred, ref, spacing=None) -> dict:
    """All five metrics and the global-Dice counts of one mask pair, in one pass.

    Parameters
    ----------
    pred, ref : array_like of bool, same shape
    spacing : sequence of float, optional
        Voxel size in mm per axis (default 1).

    Returns
    -------
    dict
        ``dice``, ``voe``, ``rvd``, ``assd``, ``msd`` (floats, conventions of
        :data:`CONVENTIONS`), ``intersection``, ``pred_voxels``, ``ref_voxels``
        (ints) and ``pred_empty``, ``ref_empty`` (bools).
    """
    pred, ref = _as_masks(pred, ref)
    sampling = _as_spacing(spacing, pred.ndim)
    pred, ref = _crop_pair(pred, ref)
    inter, n_pred, n_ref = dice_counts(pred, ref)
    assd_value, msd_value = _assd_msd(pred, ref, sampling)
    return {
        "dice": _dice(inter, n_pred, n_ref),
        "voe": _voe(inter, n_pred, n_ref),
        "rvd": _rvd(n_pred, n_ref),
        "assd": assd_value,
        "msd": msd_value,
        "intersection": inter,
        "pred_voxels": n_pred,
        "ref_voxels": n_ref,
        "pred_empty": n_pred == 0,
        "ref_empty": n_ref == 0,
    }


def global_dice(counts) -> float:
    """Global Dice ``2·Σ|X∩Y| / Σ(|X|+|Y|)`` over cases.

    Parameters
    ----------
    counts : iterable of (intersection, pred_voxels, ref_voxels), or DataFrame
        One triple per case, as :func:`dice_counts` returns; a DataFrame with
        columns ``intersection``, ``pred_voxels`` and ``ref_voxels`` (the rows
        of :func:`~liverlib.evaluation.detection.case_metrics`) also works.

    Returns
    -------
    float
        1.0 when every mask of every case is empty (the per-case convention).

    Examples
    --------
    >>> global_dice([(1, 1, 1), (0, 0, 98)])   # per-case mean would be 0.5
    0.02
    """
    if hasattr(counts, "columns"):
        table = counts[["intersection", "pred_voxels", "ref_voxels"]].to_numpy(dtype=np.int64)
    else:
        table = np.asarray(list(counts), dtype=np.int64).reshape(-1, 3)
    inter, n_pred, n_ref = (int(v) for v in table.sum(axis=0))
    if np.any(table < 0) or np.any(table[:, 0] > np.minimum(table[:, 1], table[:, 2])):
        raise ValueError("each count triple must be (intersection, pred_voxels, ref_voxels) with 0 <= intersection <= both sizes")
    return _dice(inter, n_pred, n_ref)
