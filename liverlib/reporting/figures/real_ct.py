"""Notebook 08's figure: the run's predictions on real CT against the reference liver."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from liverlib.data import load_image, load_label
from liverlib.reporting.figures.common import outline, show_ct
from liverlib.reporting.figures.evaluation import difference_overlay


def real_ct_predictions(scans: Sequence, predictions: Sequence, scores=None, planes: int = 3) -> plt.Figure:
    """Real scans with the reference liver (left) and the prediction (right) outlined, on a few planes each.

    Parameters
    ----------
    scans : sequence of liverlib.evaluation.real_ct.RealScan
    predictions : sequence of path
        The label volumes predicted for ``scans``, in the same order.
    scores : DataFrame, optional
        :func:`liverlib.evaluation.real_ct.score_real_ct`'s table, for the titles.
    planes : int
        Planes shown per scan, evenly spaced over the reference liver.

    Returns
    -------
    matplotlib.figure.Figure
        One row per scan and plane: reference outline, prediction outline
        (liver green, lesion red) and their difference (red: predicted only, blue: missed).
    """
    rows = []
    for scan, path in zip(scans, predictions):
        image, _, geometry = load_image(scan.image)
        reference = load_label(scan.liver, geometry) > 0
        labels = load_label(path, geometry)
        with_liver = np.flatnonzero(reference.any(axis=(1, 2)))
        picks = with_liver[np.linspace(0, len(with_liver) - 1, planes).round().astype(int)] if len(with_liver) else [0]
        dice = None if scores is None else scores.set_index("scan").loc[scan.name, "liver_dice"]
        rows += [(scan.name, image[z], reference[z], labels[z], z, dice) for z in dict.fromkeys(picks)]
    fig, axes = plt.subplots(len(rows), 3, figsize=(9.0, 3.0 * len(rows)), squeeze=False)
    for (name, image, reference, labels, z, dice), ax in zip(rows, axes):
        score = "" if dice is None else f", liver Dice {dice:.3f}"
        show_ct(ax[0], image, title=f"{name}, plane {z}: reference")
        outline(ax[0], reference.astype(np.uint8))
        show_ct(ax[1], image, title=f"prediction{score}")
        outline(ax[1], labels)
        difference_overlay(ax[2], image, labels > 0, reference, "difference (red FP, blue FN)")
    fig.tight_layout()
    return fig
