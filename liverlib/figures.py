"""The paper's figures: one saving function and plain plotting functions over arrays.

Every figure is saved by :func:`save_figure`, with a fixed dpi and no
timestamp or version in the PNG metadata, so reruns give identical files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from liverlib.atomic import atomic_path

DPI = 110
DISPLAY_WINDOW = (-160.0, 240.0)  # abdominal soft-tissue window (W 400 / L 40) for display
LABEL_COLOURS = {1: "#2ca02c", 2: "#d62728"}  # liver green, lesion red


def save_figure(fig: plt.Figure, figures_dir: str | Path, name: str) -> Path:
    """Save ``fig`` as ``figures_dir/name.png`` atomically, reproducibly, and return the path."""
    path = Path(figures_dir) / f"{name}.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format="png", metadata={"Software": None})
    return path


def show_ct(ax: plt.Axes, image: np.ndarray, window: tuple[float, float] = DISPLAY_WINDOW, title: str | None = None) -> None:
    """Show one CT slice in a display window, without axes."""
    ax.imshow(image, cmap="gray", vmin=window[0], vmax=window[1], interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)


def outline(ax: plt.Axes, label: np.ndarray, labels: Sequence[int] = (1, 2), linewidth: float = 1.0) -> None:
    """Draw the outlines of liver (1, with lesions) and lesion (2) on ``ax``."""
    for value in labels:
        mask = label >= value if value == 1 else label == value
        if mask.any():
            ax.contour(mask.astype(float), levels=[0.5], colors=LABEL_COLOURS[value], linewidths=linewidth)


def representative_slice(label: np.ndarray) -> int:
    """The plane with the most lesion, else the most liver, else the middle one."""
    for value in (2, 1):
        areas = (label >= value).sum(axis=(1, 2)) if value == 1 else (label == value).sum(axis=(1, 2))
        if areas.max() > 0:
            return int(areas.argmax())
    return label.shape[0] // 2


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


def montage(image: np.ndarray, label: np.ndarray | None = None, n: int = 12, columns: int = 6) -> plt.Figure:
    """A static montage of ``n`` evenly spaced axial planes, with label outlines."""
    planes = np.linspace(0, image.shape[0] - 1, n).round().astype(int)
    rows = int(np.ceil(n / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.2 * rows), squeeze=False)
    for ax, z in zip(axes.ravel(), planes):
        show_ct(ax, image[z], title=f"z = {z}")
        if label is not None:
            outline(ax, label[z], linewidth=0.8)
    for ax in axes.ravel()[len(planes):]:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def fig1_samples(cases, n: int = 6) -> plt.Figure:
    """The paper's Fig. 1: one representative slice of each of the first ``n`` cases.

    Parameters
    ----------
    cases : list of liverlib.data.CaseFiles
    """
    from liverlib.data import load_case

    samples = []
    for files in cases[:n]:
        case = load_case(files)
        z = representative_slice(case.label)
        samples.append((f"case {case.case_id}, z = {z}", case.image[z], case.label[z]))
    return sample_grid(samples, columns=min(3, len(samples)))


def phantom_vs_real(phantom_files, real_ct_path) -> plt.Figure:
    """A phantom slice beside the real CT at a similar level, with both HU histograms."""
    from liverlib.data import load_case, load_image

    phantom = load_case(phantom_files)
    real, _, _ = load_image(real_ct_path)
    z = representative_slice(phantom.label)
    return compare_with_histograms(
        [
            (f"phantom case {phantom.case_id}, z = {z}", phantom.image[z], phantom.image),
            (f"real CT ({Path(real_ct_path).name}), z = {real.shape[0] // 2}", real[real.shape[0] // 2], real),
        ]
    )
