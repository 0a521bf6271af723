"""Notebook 06's figure: one axial plane before and after the 3D CRF, and what it changed."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from liverlib.evaluation.metrics import dice
from liverlib.reporting.figures.common import outline, representative_slice, show_ct


def _zoom_box(masks: Sequence[np.ndarray], shape: tuple[int, int], margin: float = 0.25) -> tuple[slice, slice]:
    """A square in-plane box around all ``masks`` (2-D), padded by ``margin`` of its side."""
    union = np.zeros(shape, bool)
    for mask in masks:
        union |= mask > 0
    if not union.any():
        return slice(0, shape[0]), slice(0, shape[1])
    rows, cols = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    side = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    side = min(int(side * (1 + 2 * margin)) + 2, max(shape))
    box = []
    for lo, hi, n in ((rows[0], rows[-1], shape[0]), (cols[0], cols[-1], shape[1])):
        start = min(max((lo + hi + 1 - side) // 2, 0), max(n - side, 0))
        box.append(slice(int(start), int(min(start + side, n))))
    return box[0], box[1]


def crf_change_plane(before: np.ndarray, after: np.ndarray, reference: np.ndarray | None = None) -> int:
    """The axial plane where the CRF changed the most voxels (else the reference's representative plane)."""
    changed = (before != after).sum(axis=(1, 2))
    if changed.max() > 0:
        return int(changed.argmax())
    return representative_slice(reference if reference is not None else after)


def crf_before_after(
    image: np.ndarray,
    reference: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    plane: int | None = None,
    case_id: int | None = None,
    zoom: bool = True,
    **_: object,
) -> plt.Figure:
    """One axial plane: reference, prediction before and after the CRF, and what the CRF changed.

    Parameters
    ----------
    image : ndarray, (plane, row, column), HU
    reference, before, after : ndarray of uint8 {0, 1, 2}, image's shape
    plane : int, optional
        Default: where the CRF changed the most voxels (:func:`crf_change_plane`).
    case_id : int, optional
        For the title.
    zoom : bool
        Crop to the liver region (of all three label volumes) on that plane.
    **_
        Ignored, so that the dict of :func:`liverlib.evaluation.run.load_before_after`
        can be passed as ``**example``.

    Returns
    -------
    matplotlib Figure
        Four panels. Outlines: liver green, lesion red. The last panel shows the
        voxels the CRF added (blue) or removed (orange), liver and lesion alike.
    """
    z = crf_change_plane(before, after, reference) if plane is None else int(plane)
    box = _zoom_box([reference[z], before[z], after[z]], image.shape[1:]) if zoom else (slice(None), slice(None))

    def scores(pred: np.ndarray) -> str:
        liver = dice(pred > 0, reference > 0)
        lesion = dice(pred == 2, reference == 2)
        return f"Dice liver {liver:.3f}, lesion {lesion:.3f}"

    fig, axes = plt.subplots(1, 4, figsize=(13.2, 3.8))
    panels = [("reference", reference), (f"before CRF\n{scores(before)}", before), (f"after CRF\n{scores(after)}", after)]
    for ax, (title, label) in zip(axes, panels):
        show_ct(ax, image[z][box], title=title)
        outline(ax, label[z][box])
    show_ct(axes[3], image[z][box], title="changed by the CRF\nadded blue, removed orange")
    for value in (1, 2):
        was = before[z][box] >= value if value == 1 else before[z][box] == value
        now = after[z][box] >= value if value == 1 else after[z][box] == value
        overlay = np.zeros(was.shape + (4,))
        overlay[now & ~was] = (0.12, 0.47, 0.71, 0.8)
        overlay[was & ~now] = (1.0, 0.5, 0.05, 0.8)
        axes[3].imshow(overlay, interpolation="nearest")
    outline(axes[3], reference[z][box], linewidth=0.6)
    n_changed = int((before != after).sum())
    case = f"case {case_id}, " if case_id is not None else ""
    fig.suptitle(f"{case}plane z = {z}: the 3D CRF changed {n_changed} voxels in the volume", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.93))  # room for the suptitle above the two-line panel titles
    return fig
