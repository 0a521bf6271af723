"""Lesion detection and the per-case liver and lesion scores, as the LiTS scorer counts them.

Lesion detection
----------------
:func:`lesion_detection` follows the LiTS scorer's ``detect_lesions``: lesions
are 3-D connected components (full connectivity, as ``liverlib.data.count_lesions``);
a predicted component that spans several reference lesions merges them, and
predicted components that overlap the same (merged) reference lesion are merged;
a reference lesion counts as detected when its merged group overlaps the merged
prediction with IoU > ``overlap`` (0.5). Two differences from the scorer, both
deliberate: components use full (26-) connectivity where the scorer labels with
face connectivity after a one-voxel in-plane dilation of the reference, and TP,
FP and FN are counted per component exactly (see :func:`lesion_detection`).
"""

from __future__ import annotations

import numpy as np

from liverlib.evaluation.metrics import (
    _NAN,
    _as_masks,
    _as_spacing,
    _crop_pair,
    segmentation_scores,
)
from liverlib.transforms.morphology import connected_components

__all__ = ["STRUCTURES", "lesion_detection", "case_metrics"]

#: The structures scored per case and the labels each one covers, as the LiTS
#: scorer has them: the liver includes its lesions.
STRUCTURES: dict[str, tuple[int, ...]] = {"liver": (1, 2), "lesion": (2,)}


# --------------------------------------------------------------------------- lesion detection


def _detect(pred: np.ndarray, ref: np.ndarray, overlap: float) -> dict:
    """The LiTS scorer's merge-and-match detection, on already cropped masks."""
    pred_labels, pred_size = connected_components(pred)
    ref_labels, ref_size = connected_components(ref)
    n_pred, n_ref = len(pred_size) - 1, len(ref_size) - 1

    # Sparse overlap: only components that touch each other enter the matrix.
    both = (pred_labels > 0) & (ref_labels > 0)
    pairs, counts = np.unique(
        pred_labels[both].astype(np.int64) * (n_ref + 1) + ref_labels[both], return_counts=True
    )
    p_ids, p_rows = np.unique(pairs // (n_ref + 1), return_inverse=True)
    g_ids, g_cols = np.unique(pairs % (n_ref + 1), return_inverse=True)
    inter = np.zeros((p_ids.size, g_ids.size), dtype=np.int64)
    inter[p_rows, g_cols] = counts

    detected_refs = 0
    matched_preds = 0
    if inter.size:
        # 1. Each reference lesion goes to the predicted component that overlaps
        #    it most; references that share that component are merged into one
        #    group (one prediction spanning several lesions).
        owner = np.argmax(inter, axis=0)
        groups = np.unique(owner)
        group_of_ref = np.searchsorted(groups, owner)
        group_inter = np.zeros((p_ids.size, groups.size), dtype=np.int64)
        np.add.at(group_inter.T, group_of_ref, inter.T)
        # 2. Each predicted component matches the one group it overlaps most;
        #    components matching the same group are merged (a split lesion).
        match = np.argmax(group_inter, axis=1)
        for k in range(groups.size):
            members = np.flatnonzero(match == k)
            if members.size == 0:
                continue
            refs_in_group = g_ids[group_of_ref == k]
            intersection = int(group_inter[members, k].sum())
            union = int(pred_size[p_ids[members]].sum() + ref_size[refs_in_group].sum()) - intersection
            # 3. Detected when the merged prediction overlaps the merged
            #    reference with IoU above the threshold (strictly, as LiTS).
            if intersection / union > overlap:
                detected_refs += refs_in_group.size
                matched_preds += members.size

    tp = detected_refs
    fn = n_ref - detected_refs
    fp = n_pred - matched_preds
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": tp / (tp + fp) if tp + fp else _NAN,
        "recall": tp / (tp + fn) if tp + fn else _NAN,
        "ref_lesions": n_ref,
        "pred_lesions": n_pred,
    }


def lesion_detection(pred, ref, spacing=None, overlap: float = 0.5) -> dict:
    """Lesion-wise detection counts, as the LiTS scorer defines them.

    Lesions are connected components (full connectivity). A predicted
    component spanning several reference lesions merges them into one group;
    each predicted component is matched to the group it overlaps most, and the
    components matched to one group are merged. A group is detected when
    ``IoU(merged prediction, merged reference) > overlap``; then every
    reference lesion in it is a true positive.

    Parameters
    ----------
    pred, ref : array_like of bool, same shape
        Lesion masks (label 2).
    spacing : sequence of float, optional
        Accepted for a uniform signature; IoU is counted in voxels, which is
        the same in mm³ for a uniform grid.
    overlap : float
        IoU threshold in [0, 1); 0.5 in LiTS. With 0, any overlap detects.

    Returns
    -------
    dict
        ``tp`` reference lesions detected, ``fn`` reference lesions missed,
        ``fp`` predicted components not part of a detection, ``precision`` =
        tp / (tp + fp) and ``recall`` = tp / (tp + fn), each nan when its
        denominator is 0 (no predicted / no reference lesion: undefined;
        tables pool tp, fp and fn over cases instead of averaging these),
        and ``ref_lesions``, ``pred_lesions``: the component counts.

    Notes
    -----
    With merges, precision mixes reference counts (tp) with prediction counts
    (fp), as the LiTS scorer does.
    """
    pred, ref = _as_masks(pred, ref)
    _as_spacing(spacing, pred.ndim)
    if not 0.0 <= float(overlap) < 1.0:
        raise ValueError(f"overlap is an IoU threshold in [0, 1), got {overlap}")
    return _detect(*_crop_pair(pred, ref), float(overlap))


# --------------------------------------------------------------------------- per case


def _check_labels(labels: np.ndarray, name: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() > 2):
        raise ValueError(f"{name} must hold labels in {{0, 1, 2}} (0 background, 1 liver, 2 lesion), "
                         f"got values in [{labels.min()}, {labels.max()}]")


def case_metrics(pred_labels, ref_labels, spacing=None, overlap: float = 0.5) -> list[dict]:
    """Score one case's label volumes: one row per structure.

    Parameters
    ----------
    pred_labels, ref_labels : array_like of int, same shape
        Label volumes in {0, 1, 2} (background, liver, lesion), both in the
        same orientation, e.g. canonical (plane, row, column).
    spacing : sequence of float, optional
        Voxel size in mm per axis, in the arrays' axis order (default 1).
    overlap : float
        IoU threshold of lesion detection (LiTS: 0.5).

    Returns
    -------
    list of dict
        Two rows, ``structure`` "liver" (labels 1 and 2 together, as the LiTS
        scorer has it) then "lesion" (label 2). Each holds the keys of
        :func:`~liverlib.evaluation.metrics.segmentation_scores`; the lesion row adds ``tp``, ``fp``,
        ``fn``, ``precision``, ``recall``, ``ref_lesions`` and
        ``pred_lesions`` from :func:`lesion_detection`.

    Raises
    ------
    ValueError
        If the shapes differ, a label is outside {0, 1, 2} or ``spacing`` is
        malformed.
    """
    pred_labels = np.asarray(pred_labels)
    ref_labels = np.asarray(ref_labels)
    if pred_labels.shape != ref_labels.shape:
        raise ValueError(
            f"pred_labels and ref_labels must have the same shape, got {pred_labels.shape} and {ref_labels.shape}"
        )
    _check_labels(pred_labels, "pred_labels")
    _check_labels(ref_labels, "ref_labels")
    sampling = _as_spacing(spacing, pred_labels.ndim)
    rows = []
    for structure, labels in STRUCTURES.items():
        # Crop once to the structure's union box; everything below then works
        # on a small array, whatever the size of the volume.
        pred, ref = _crop_pair(np.isin(pred_labels, labels), np.isin(ref_labels, labels))
        row = {"structure": structure, **segmentation_scores(pred, ref, sampling)}
        if structure == "lesion":
            row.update(lesion_detection(pred, ref, overlap=overlap))
        rows.append(row)
    return rows
