"""Notebooks 04 and 05's figures: per-fold training curves and a batch of network inputs."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def training_curves(history, stage: str) -> plt.Figure:
    """Per-fold training curves of one stage: loss and Dice, training (solid) and validation (dashed).

    Parameters
    ----------
    history : pandas.DataFrame
        Rows of every fold's ``history.csv`` with a ``fold`` column added.
    stage : {"liver", "lesion"}
    """
    rows = history[history["stage"] == stage]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    colours = plt.get_cmap("tab10")
    for i, (fold, curve) in enumerate(rows.groupby("fold")):
        for ax, metric in zip(axes, ("loss", "dice_coefficient")):
            ax.plot(curve["epoch"], curve[metric], color=colours(i % 10), lw=1.2, label=f"fold {fold}")
            if f"val_{metric}" in curve:
                ax.plot(curve["epoch"], curve[f"val_{metric}"], color=colours(i % 10), lw=1.0, ls="--")
    for ax, title in zip(axes, ("loss", "Dice (threshold 0.5)")):
        ax.set_xlabel("epoch")
        ax.set_title(f"{stage}: {title}; solid training, dashed validation", fontsize=9)
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def training_input(x, y, title: str, n: int = 8) -> plt.Figure:
    """Fig. 6: what the network is fed, a batch of augmented 96x96 inputs with their target outlined."""
    n = min(n, len(x))
    fig, axes = plt.subplots(1, n, figsize=(1.9 * n, 2.2), squeeze=False)
    for ax, image, mask in zip(axes[0], x[:n], y[:n]):
        ax.imshow(np.squeeze(image), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        if np.squeeze(mask).any():
            ax.contour(np.squeeze(mask), levels=[0.5], colors="#ff7f0e", linewidths=0.8)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
