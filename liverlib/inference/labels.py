"""Final labels {0 background, 1 liver, 2 lesion} from the two stages' probabilities, CRF-refined."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from liverlib.inference.crf import (
    MAX_VOXELS,
    ROI_MARGIN_MM,
    check_inputs,
    crf_refine,
    profile_defaults,
)
from liverlib.transforms.morphology import bounding_box, connected_components

#: Share of a lesion component that must lie in the liver for the liver to grow around it
#: (:func:`lesions_in_liver`); a guard chosen a priori, not tuned (see docs/experiments.md).
LESION_MIN_INSIDE = 0.25


def refine_labels(
    image: np.ndarray,
    liver_prob: np.ndarray,
    lesion_prob: np.ndarray,
    spacing: Sequence[float],
    enabled: bool | None = None,
    iterations: int | None = None,
    pos_sigma_mm: float | None = None,
    pos_weight: float | None = None,
    bilateral_sigma_mm: float | None = None,
    bilateral_sigma_hu: float | None = None,
    bilateral_weight: float | None = None,
    lesion_pos_sigma_mm: float | None = None,
    lesion_bilateral_sigma_mm: float | None = None,
    grid_mm: float | None = None,
    lesion_grid_mm: float | None = None,
    grid_z_mm: float | None = None,
    *,
    threshold: float = 0.5,
    roi_margin_mm: float = ROI_MARGIN_MM,
    max_voxels: int = MAX_VOXELS,
) -> np.ndarray:
    """Final labels {0, 1, 2} from the two stages' probabilities, CRF-refined.

    Takes the profile's ``crf`` section as keywords: ``refine_labels(image,
    liver_prob, lesion_prob, spacing, **config["crf"])``; the parameters left
    ``None`` take the base profile's values (``liverlib/profiles.yaml``).

    1. Liver: a binary CRF (:func:`~liverlib.inference.crf.crf_refine`) on
       ``liver_prob``, whose foreground is the liver including its lesions
       (LiTS labels {1, 2}), as stage 1 predicts it.
    2. Lesion: a second binary CRF (lesion against everything else) on the
       bounding box of the refined liver joined with the network's liver
       (``liver_prob >= threshold``): the liver CRF's appearance kernel can
       carve a hypodense lesion's rim out of the liver, and the lesion CRF
       puts it back. It shares the liver CRF's iterations, weights and HU
       sigma, with the smaller spatial sigmas ``lesion_pos_sigma_mm`` and
       ``lesion_bilateral_sigma_mm``: lesions are 5-80 mm, and kernels sized
       for the liver erase the small ones.
    3. Lesions belong to the liver (:func:`lesions_in_liver`): stage 1 tends
       to leave a dark lesion on the liver's border out of the liver.
    4. Labels: 0 background, 1 refined liver, 2 lesion (so liver = {1, 2}
       is the refined liver plus the lesions).

    With ``enabled=False`` the same rule runs on the thresholded
    probabilities (liver ``liver_prob >= threshold``, lesion candidates
    ``lesion_prob >= threshold``, step 3): the "before CRF" prediction, so
    that the two columns of the tables differ only by the CRF.

    Parameters
    ----------
    image : ndarray, shape (plane, row, column)
        CT in HU.
    liver_prob, lesion_prob : ndarray of float, image's shape
        Stage-1 (liver incl. lesion) and stage-2 (lesion) probabilities.
    spacing : sequence of float
        mm per voxel.
    enabled : bool, optional
        Run the CRFs; ``False`` gives the thresholded labels.
    iterations, pos_sigma_mm, pos_weight, bilateral_sigma_mm, bilateral_sigma_hu, bilateral_weight : optional
        The liver CRF; see :func:`~liverlib.inference.crf.crf_refine`. The
        lesion CRF shares ``iterations``, the weights and ``bilateral_sigma_hu``.
    lesion_pos_sigma_mm, lesion_bilateral_sigma_mm : float, optional
        The lesion CRF's spatial sigmas, in mm.
    grid_mm, lesion_grid_mm : float, optional
        Coarsest in-plane grid (mm) of the liver CRF and of the lesion CRF
        (see :func:`~liverlib.inference.crf.crf_refine`); 0 keeps the scan's grid.
    grid_z_mm : float, optional
        Coarsest through-plane grid (mm) of the liver CRF; 0 keeps every plane. The lesion
        CRF keeps every plane: a lesion of 5 mm spans only a few.
    threshold, roi_margin_mm, max_voxels
        See :func:`~liverlib.inference.crf.crf_refine`.

    Returns
    -------
    ndarray of uint8, image's shape, values in {0, 1, 2}

    Raises
    ------
    ValueError
        For mismatched shapes, empty input or invalid parameters.
    """
    image, liver_prob, spacing, _ = check_inputs(image, liver_prob, spacing)
    lesion_prob = np.asarray(lesion_prob)
    if lesion_prob.shape != image.shape:
        raise ValueError(f"lesion_prob shape {lesion_prob.shape} does not match image shape {image.shape}")
    check_inputs(image, lesion_prob, spacing)
    if liver_prob.ndim != image.ndim:
        raise ValueError(f"liver_prob must have the image's shape {image.shape}, got {liver_prob.shape}")
    p = profile_defaults(
        enabled=enabled,
        iterations=iterations,
        pos_sigma_mm=pos_sigma_mm,
        pos_weight=pos_weight,
        bilateral_sigma_mm=bilateral_sigma_mm,
        bilateral_sigma_hu=bilateral_sigma_hu,
        bilateral_weight=bilateral_weight,
        lesion_pos_sigma_mm=lesion_pos_sigma_mm,
        lesion_bilateral_sigma_mm=lesion_bilateral_sigma_mm,
        grid_mm=grid_mm,
        lesion_grid_mm=lesion_grid_mm,
        grid_z_mm=grid_z_mm,
    )
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
    if not p["enabled"]:
        liver = liver_prob >= threshold
        return lesions_in_liver(liver, lesion_prob >= threshold)

    shared = dict(
        iterations=p["iterations"],
        pos_weight=p["pos_weight"],
        bilateral_sigma_hu=p["bilateral_sigma_hu"],
        bilateral_weight=p["bilateral_weight"],
        threshold=threshold,
        roi_margin_mm=roi_margin_mm,
        max_voxels=max_voxels,
    )
    liver = crf_refine(
        image, liver_prob, spacing, pos_sigma_mm=p["pos_sigma_mm"], bilateral_sigma_mm=p["bilateral_sigma_mm"],
        grid_mm=p["grid_mm"], grid_z_mm=p["grid_z_mm"], **shared
    ).astype(bool)
    # Lesions may lie where the CRF or the network puts liver: the liver CRF's appearance
    # kernel can carve a hypodense lesion's rim out of the liver, and the lesion CRF puts it back.
    allowed = liver | (liver_prob >= threshold)
    box = bounding_box(allowed)
    if box is None:
        return liver.astype(np.uint8)
    lesion_box = crf_refine(
        image[box],
        np.ascontiguousarray(lesion_prob[box], np.float32),
        spacing,
        pos_sigma_mm=p["lesion_pos_sigma_mm"],
        bilateral_sigma_mm=p["lesion_bilateral_sigma_mm"],
        grid_mm=p["lesion_grid_mm"],
        **shared,
    ).astype(bool)
    labels = allowed.astype(np.uint8)  # the box holds all of allowed and every lesion: label components there
    labels[box] = lesions_in_liver(allowed[box], lesion_box)
    labels[(labels == 1) & ~liver] = 0  # the network's liver only admits lesions; the CRF decides the liver
    return labels


def lesions_in_liver(liver: np.ndarray, lesion: np.ndarray, min_inside: float = LESION_MIN_INSIDE) -> np.ndarray:
    """Labels {0, 1, 2} where every lesion lies in the liver and the liver holds every lesion.

    A 3-D connected lesion component (26-connectivity) with at least
    ``min_inside`` of its voxels inside ``liver`` is kept whole and joins the
    liver: stage 1 tends to leave a dark lesion on the liver's border out of
    the liver. Any other component keeps only its part inside the liver (none,
    for a component apart from it), so a lesion network that fires on a
    neighbouring organ cannot grow the liver into it.

    Parameters
    ----------
    liver, lesion : ndarray of bool, same shape
    min_inside : float in [0, 1]

    Returns
    -------
    ndarray of uint8
        0 background, 1 liver, 2 lesion.

    Examples
    --------
    >>> liver = np.array([[[0, 1, 1, 1, 0, 0, 0, 0]]], bool)
    >>> lesion = np.array([[[1, 1, 0, 1, 1, 1, 1, 1]]], bool)
    >>> lesions_in_liver(liver, lesion)   # left: 1 of 2 inside, kept whole; right: 1 of 5, clipped
    array([[[2, 2, 1, 2, 0, 0, 0, 0]]], dtype=uint8)
    """
    liver, lesion = np.asarray(liver, bool), np.asarray(lesion, bool)
    if liver.shape != lesion.shape:
        raise ValueError(f"liver {liver.shape} and lesion {lesion.shape} masks must have the same shape")
    if not 0.0 <= float(min_inside) <= 1.0:
        raise ValueError(f"min_inside must lie in [0, 1], got {min_inside!r}")
    labels = liver.astype(np.uint8)
    box = bounding_box(lesion)  # every component lies in it: label there, not over a whole LiTS volume
    if box is not None:
        lesion, liver = lesion[box], liver[box]
        components, size = connected_components(lesion)
        inside = np.bincount(components[liver], minlength=len(size))
        whole = (inside > 0) & (inside >= float(min_inside) * size)
        whole[0] = False
        labels[box][whole[components] | (lesion & liver)] = 2  # (a view: basic slices)
    return labels
