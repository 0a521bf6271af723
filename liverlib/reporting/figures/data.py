"""Notebook 01's figures: sample slices of the cohort, and a phantom beside a real CT."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from liverlib.data import load_case, load_image
from liverlib.reporting.figures.common import outline, representative_slice, show_ct


def sample_grid(samples: Sequence[tuple[str, np.ndarray, np.ndarray]], columns: int = 3) -> plt.Figure:
    """Fig. 1: CT slices with liver (green) and lesion (red) outlines.

    Parameters
    ----------
    samples : sequence of (title, image slice HU, label slice)
    """
    rows = int(np.ceil(len(samples) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.2 * rows), squeeze=False)
    for ax, (title, image, label) in zip(axes.ravel(), samples):
        show_ct(ax, image, title=title)
        outline(ax, label)
    for ax in axes.ravel()[len(samples):]:
        ax.set_axis_off()
    fig.suptitle("CT slices with liver (green) and lesion (red) outlines", fontsize=10)
    fig.tight_layout()
    return fig


def compare_with_histograms(panels: Sequence[tuple[str, np.ndarray, np.ndarray]], hu_range=(-1100, 1300)) -> plt.Figure:
    """Slices side by side with the HU histogram of each whole volume.

    Parameters
    ----------
    panels : sequence of (title, slice to show, volume HU for the histogram)
    """
    fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 7.2), squeeze=False)
    for column, (title, image, volume) in enumerate(panels):
        show_ct(axes[0, column], image, title=title)
        ax = axes[1, column]
        ax.hist(volume.ravel(), bins=240, range=hu_range, color="0.3", log=True)
        for hu, name in ((-1000, "air"), (-100, "fat"), (50, "soft tissue")):
            ax.axvline(hu, color="tab:blue", lw=0.6, ls=":")
            ax.text(hu, ax.get_ylim()[1], name, fontsize=7, rotation=90, va="top", ha="right")
        ax.set_xlabel("HU")
        ax.set_ylabel("voxels (log)")
    fig.tight_layout()
    return fig


def fig1_samples(cases, n: int = 6) -> plt.Figure:
    """The paper's Fig. 1: one representative slice of each of the first ``n`` cases.

    Parameters
    ----------
    cases : list of liverlib.data.CaseFiles
    """
    samples = []
    for files in cases[:n]:
        case = load_case(files)
        z = representative_slice(case.label)
        samples.append((f"case {case.case_id}, z = {z}", case.image[z], case.label[z]))
    return sample_grid(samples, columns=min(3, len(samples)))


def phantom_vs_real(phantom_files, real_ct_path) -> plt.Figure:
    """A phantom slice beside the real CT at a similar level, with both HU histograms."""
    phantom = load_case(phantom_files)
    real, _, _ = load_image(real_ct_path)
    z = representative_slice(phantom.label)
    return compare_with_histograms(
        [
            (f"phantom case {phantom.case_id}, z = {z}", phantom.image[z], phantom.image),
            (f"real CT ({Path(real_ct_path).name}), z = {real.shape[0] // 2}", real[real.shape[0] // 2], real),
        ]
    )
