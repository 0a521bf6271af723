"""What every figure shares: the reproducible PNG writer, the CT display and label outlines.

Every figure is saved by :func:`save_figure`, with a fixed dpi and no
timestamp or version in the PNG metadata, so reruns give identical files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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


def show_gray(ax: plt.Axes, image: np.ndarray, vmin: float, vmax: float, title: str) -> None:
    """Show an image in gray between ``vmin`` and ``vmax``, without axes, with a title."""
    ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_axis_off()
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
