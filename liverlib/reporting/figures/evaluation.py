"""Notebook 07's figures: predictions against the reference, lesions, and the Dice per fold."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from liverlib.data import load_case, load_label
from liverlib.data.sources import dataset_cases
from liverlib.reporting.figures.common import outline, representative_slice, show_ct
from liverlib.runfolder import RunFolder, load_run


def _load_scored_case(run_dir, case_id: int, crf: int = 1):
    """The image, reference and prediction of one scored test case of a run."""
    files = {c.case_id: c for c in dataset_cases(load_run(run_dir))}[case_id]
    case = load_case(files)
    return case, load_label(RunFolder(run_dir).prediction(case_id, crf), case.geometry)


def difference_overlay(ax: plt.Axes, image: np.ndarray, pred: np.ndarray, ref: np.ndarray, title: str = "") -> None:
    """CT with false positives (red) and false negatives (blue) of a binary mask."""
    show_ct(ax, image, title=title)
    overlay = np.zeros((*pred.shape, 4))
    overlay[pred & ~ref] = (0.85, 0.1, 0.1, 0.75)
    overlay[ref & ~pred] = (0.1, 0.35, 0.95, 0.75)
    ax.imshow(overlay, interpolation="nearest")


def prediction_vs_reference(run_dir, metrics, n: int = 4) -> plt.Figure:
    """The paper's evaluation figure: prediction, reference and their difference.

    Columns are test cases spanning the liver Dice range (best, median, worst...);
    rows are the predicted labels, the reference labels, and the difference
    of the liver masks (red: predicted only, blue: missed).
    """
    liver = metrics[(metrics["structure"] == "liver") & (metrics["crf"] == 1)].sort_values("dice", ascending=False)
    picks = liver.iloc[np.unique(np.linspace(0, len(liver) - 1, min(n, len(liver))).round().astype(int))]
    fig, axes = plt.subplots(3, len(picks), figsize=(3.0 * len(picks), 9.0), squeeze=False)
    for column, (_, row) in enumerate(picks.iterrows()):
        case, pred = _load_scored_case(run_dir, int(row["case"]))
        z = representative_slice(case.label)
        show_ct(axes[0, column], case.image[z], title=f"case {int(row['case'])} (fold {int(row['fold'])}), Dice {row['dice']:.3f}")
        outline(axes[0, column], pred[z])
        show_ct(axes[1, column], case.image[z], title="reference")
        outline(axes[1, column], case.label[z])
        difference_overlay(axes[2, column], case.image[z], pred[z] >= 1, case.label[z] >= 1, "difference (red FP, blue FN)")
    axes[0, 0].text(-0.08, 0.5, "prediction", transform=axes[0, 0].transAxes, rotation=90, va="center", ha="right")
    fig.tight_layout()
    return fig


def lesion_predictions(run_dir, metrics, n: int = 4) -> plt.Figure:
    """The paper's lesion figure: for test cases with lesions, the liver region, reference and predicted lesions."""
    lesion = metrics[(metrics["structure"] == "lesion") & (metrics["crf"] == 1) & ~metrics["ref_empty"].astype(bool)]
    lesion = lesion.sort_values("dice", ascending=False).head(n)
    if lesion.empty:
        fig, ax = plt.subplots(figsize=(5, 1))
        ax.text(0.5, 0.5, "no test case has a lesion in its reference", ha="center", va="center")
        ax.set_axis_off()
        return fig
    fig, axes = plt.subplots(len(lesion), 3, figsize=(9.0, 3.0 * len(lesion)), squeeze=False)
    for row_axes, (_, row) in zip(axes, lesion.iterrows()):
        case, pred = _load_scored_case(run_dir, int(row["case"]))
        areas = (case.label == 2).sum(axis=(1, 2))
        z = int(areas.argmax())
        rows, cols = np.nonzero(case.label[z] >= 1)
        box = (slice(max(rows.min() - 8, 0), rows.max() + 9), slice(max(cols.min() - 8, 0), cols.max() + 9))
        show_ct(row_axes[0], case.image[z][box], title=f"case {int(row['case'])}, z = {z}")
        outline(row_axes[0], case.label[z][box], labels=(1,))
        show_ct(row_axes[1], case.image[z][box], title="reference lesions")
        outline(row_axes[1], case.label[z][box], labels=(2,))
        show_ct(row_axes[2], case.image[z][box], title=f"predicted lesions (case Dice {row['dice']:.2f})")
        outline(row_axes[2], pred[z][box], labels=(2,))
    fig.tight_layout()
    return fig


def dice_distribution(metrics) -> plt.Figure:
    """Per-case Dice per fold, liver and lesion, after the CRF (lesion-free cases marked)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    after = metrics[metrics["crf"] == 1]
    for ax, structure in zip(axes, ("liver", "lesion")):
        part = after[after["structure"] == structure]
        folds = sorted(part["fold"].unique())
        ax.boxplot([part.loc[part["fold"] == f, "dice"].dropna() for f in folds], positions=folds, widths=0.6,
                   showfliers=False)
        for f in folds:
            cases = part[part["fold"] == f]
            jitter = np.linspace(-0.15, 0.15, len(cases)) if len(cases) > 1 else np.zeros(1)
            free = cases["ref_empty"].astype(bool).to_numpy()
            ax.scatter(f + jitter[~free], cases["dice"].to_numpy()[~free], s=12, color="tab:blue", zorder=3)
            ax.scatter(f + jitter[free], cases["dice"].to_numpy()[free], s=14, marker="x", color="tab:gray", zorder=3)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("fold")
        ax.set_ylabel("Dice per case")
        ax.set_title(f"{structure}, after CRF" + (" (x: no lesion in the reference)" if structure == "lesion" else ""), fontsize=9)
    fig.tight_layout()
    return fig
