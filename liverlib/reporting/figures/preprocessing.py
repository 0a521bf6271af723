"""Notebook 02's figures: the preprocessing steps, augmentation and histogram equalization of a slice."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.gridspec import GridSpec

from liverlib import transforms
from liverlib.data.cache import normalize_config
from liverlib.reporting.figures.common import (
    LABEL_COLOURS,
    outline,
    representative_slice,
    show_gray,
)
from liverlib.transforms.augment import augment_batch


@dataclass(frozen=True, eq=False)
class PreprocessingSteps:
    """The intermediate images of one slice through the paper's preprocessing (for display).

    Stage 1 (whole slice) and stage 2 (liver ROI), each step as
    :func:`liverlib.transforms.prepare_slices` computes it: ``window`` -> ``resize``
    (still HU) -> ``equalize`` (gray levels). Labels are resized by nearest
    neighbour, as in the slice cache. ``equalized`` and ``roi_equalized`` are
    always the paper's equalization; ``equalize`` says whether the run uses it
    (``preprocess.equalize``; False is an ablation with a linear gray mapping).
    """

    case_id: int
    plane: int
    raw: np.ndarray  # HU, the stored slice
    label: np.ndarray
    windowed: np.ndarray  # HU clipped to the window
    resized: np.ndarray  # HU, size x size
    equalized: np.ndarray  # gray levels, size x size: the stage-1 input
    label_resized: np.ndarray
    roi: transforms.Roi
    roi_resized: np.ndarray  # HU, the liver ROI resized
    roi_equalized: np.ndarray  # gray levels: the stage-2 input
    roi_label: np.ndarray
    hu_window: tuple[float, float]
    levels: int
    equalize: bool = True


def preprocessing_steps(case, preprocess_cfg: dict | None = None, plane: int | None = None) -> PreprocessingSteps:
    """Run one slice of a labelled case through the preprocessing, keeping every step.

    Parameters
    ----------
    case : liverlib.data.Case
        A loaded case with its label.
    preprocess_cfg : dict, optional
        The ``preprocess`` config section (default: profiles.yaml ``base``).
    plane : int, optional
        The axial plane; default :func:`representative_slice` (most lesion, else most liver).

    Returns
    -------
    PreprocessingSteps
    """
    cfg = normalize_config(preprocess_cfg)
    if case.label is None:
        raise ValueError(f"case {case.case_id} has no segmentation; the preprocessing figures need one")
    label = np.asarray(case.label)
    z = representative_slice(label) if plane is None else int(plane)
    if not 0 <= z < label.shape[0]:
        raise ValueError(f"plane must be in 0..{label.shape[0] - 1}, got {plane!r}")
    if not (label > 0).any():
        raise ValueError(f"case {case.case_id} has no liver: there is no ROI to show")
    options = {**transforms.image_options(cfg), "equalize": True}
    raw = np.asarray(case.image[z], np.float32)
    windowed = transforms.window(raw, cfg["hu_window"])
    roi = transforms.liver_roi(label > 0, case.spacing, cfg["roi_margin_mm"])
    roi_windowed = transforms.crop(windowed, roi)
    return PreprocessingSteps(
        case_id=int(case.case_id),
        plane=z,
        raw=raw,
        label=label[z],
        windowed=windowed,
        # stage 1 pads a non-square slice to a square with air (the window's low end once windowed)
        resized=transforms.resize_slices(transforms.pad_square(windowed, float(cfg["hu_window"][0])), cfg["size"]),
        equalized=transforms.prepare_slices(transforms.pad_square(raw[None], transforms.AIR_HU), **options)[0],
        label_resized=transforms.resize_slices(transforms.pad_square(label[z], 0), cfg["size"], order=0),
        roi=roi,
        roi_resized=transforms.resize_slices(roi_windowed, cfg["size"]),
        roi_equalized=transforms.prepare_slices(transforms.crop(raw, roi)[None], **options)[0],
        roi_label=transforms.resize_slices(transforms.crop(label[z], roi), cfg["size"], order=0),
        hu_window=tuple(cfg["hu_window"]),
        levels=cfg["levels"],
        equalize=cfg["equalize"],
    )


def fig2_preprocessing(steps: PreprocessingSteps) -> plt.Figure:
    """The paper's Fig. 2: the effect of the preprocessing on one CT slice.

    Top row, stage 1 (liver): the raw slice in its full HU range, the HU window,
    the resize to the network's size, then histogram equalization (the network
    input). Bottom row, stage 2 (lesion): the liver ROI box on the windowed slice,
    the crop, its resize and its equalization. Outlines: liver green, lesion red.
    """
    low, high = steps.hu_window
    rows, cols = steps.raw.shape
    size = steps.resized.shape
    top_levels = steps.levels - 1
    fig, axes = plt.subplots(2, 4, figsize=(13.2, 7.0))
    ax = axes[0, 0]
    shown = ax.imshow(steps.raw, cmap="gray", interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"raw HU, full range\n{rows}×{cols}, [{steps.raw.min():.0f}, {steps.raw.max():.0f}] HU", fontsize=9)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=7)
    show_gray(axes[0, 1], steps.windowed, low, high, f"HU window [{low:.0f}, {high:.0f}]\n{rows}×{cols}")
    show_gray(axes[0, 2], steps.resized, low, high, f"resized to {size[0]}×{size[1]}\n(antialiased linear)")
    used = "input" if steps.equalize else "input if preprocess.equalize were on"
    show_gray(axes[0, 3], steps.equalized, 0, top_levels, f"histogram equalized\nstage-1 {used}, {size[0]}×{size[1]}")
    outline(axes[0, 3], steps.label_resized, linewidth=0.8)

    roi = steps.roi
    ax = axes[1, 0]
    show_gray(ax, steps.windowed, low, high, f"liver ROI (margin, squared)\nrows {roi.row0}:{roi.row1}, columns {roi.col0}:{roi.col1}")
    outline(ax, steps.label, linewidth=0.8)
    ax.add_patch(
        plt.Rectangle((roi.col0 - 0.5, roi.row0 - 0.5), roi.width, roi.height, fill=False, edgecolor="#ffbf00", linewidth=1.5)
    )
    cropped = steps.windowed[roi.row0 : roi.row1, roi.col0 : roi.col1]
    show_gray(axes[1, 1], cropped, low, high, f"ROI crop\n{roi.height}×{roi.width}")
    show_gray(axes[1, 2], steps.roi_resized, low, high, f"ROI resized to {size[0]}×{size[1]}")
    show_gray(axes[1, 3], steps.roi_equalized, 0, top_levels, f"histogram equalized\nstage-2 {used}, {size[0]}×{size[1]}")
    outline(axes[1, 3], steps.roi_label, linewidth=0.8)
    for row, text in enumerate(("stage 1\n(liver)", "stage 2\n(lesion)")):
        axes[row, 0].text(-0.08, 0.5, text, transform=axes[row, 0].transAxes, rotation=90,
                          ha="right", va="center", fontsize=10)  # fmt: skip
    fig.suptitle(f"Preprocessing of case {steps.case_id}, plane {steps.plane} "
                 "(outlines: liver green, lesion red)", fontsize=11)  # fmt: skip
    fig.tight_layout()
    return fig


def fig3_augmentation(
    liver: tuple[np.ndarray, np.ndarray],
    lesion: tuple[np.ndarray, np.ndarray] | None = None,
    n: int = 7,
    seed: int = 0,
    levels: int = 256,
    **augment_cfg,
) -> plt.Figure:
    """The paper's Fig. 3: one slice and ``n`` random augmentations, image and mask.

    Parameters
    ----------
    liver : (image, mask)
        Stage-1 slices from the slice cache (gray levels) and their liver masks
        {0, 1}: one slice ``(rows, columns)``, or a stack ``(n, rows, columns)``
        (``SliceCache.load``) from which the slice with the most mask is shown.
    lesion : (image, mask), optional
        Stage-2 slices (liver ROIs) and their lesion masks, likewise, shown as a
        second row; left out if None or empty.
    n : int
        Number of augmented samples per row.
    seed : int
        Seed of the draws (a ``numpy.random.Generator``), so the figure is reproducible.
    levels : int
        Gray levels of the images (display range ``0..levels-1``).
    **augment_cfg
        The ``augment`` config section: ``enabled``, ``rotation_deg``, ``flip``,
        ``scale``, ``shift`` (see :func:`liverlib.transforms.augment.augment_batch`).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    rows = []
    for name, pair, colour in (("stage 1: slice, liver", liver, LABEL_COLOURS[1]),
                               ("stage 2: liver ROI, lesion", lesion, LABEL_COLOURS[2])):  # fmt: skip
        if pair is None:
            continue
        image, mask = (np.asarray(a) for a in pair)
        if image.shape != mask.shape or image.ndim not in (2, 3):
            raise ValueError(f"{name}: images {image.shape} and masks {mask.shape} must be the same 2-D or 3-D shape")
        if image.ndim == 3:
            if len(image) == 0:
                continue
            areas = mask.reshape(len(mask), -1).sum(axis=1)
            chosen = int(areas.argmax()) if areas.max() > 0 else len(mask) // 2  # no mask anywhere: the middle
            image, mask = image[chosen], mask[chosen]
        rows.append((name, (image, mask), colour))
    if not rows:
        raise ValueError("no slice to augment: both stacks are empty")
    rng = np.random.default_rng(seed)
    enabled = bool(augment_cfg.get("enabled", True))
    fig, axes = plt.subplots(len(rows), n + 1, figsize=(1.75 * (n + 1), 1.95 * len(rows) + 0.5), squeeze=False)
    for row, (name, (image, mask), colour) in enumerate(rows):
        x, y = augment_batch(np.repeat(image[None], n, axis=0), np.repeat(mask[None], n, axis=0), rng, **augment_cfg)
        for column, (im, ma) in enumerate(zip([image, *x], [mask, *y])):
            ax = axes[row, column]
            show_gray(ax, im, 0, levels - 1, "original" if column == 0 else f"random {column}")
            if ma.any():
                ax.contour(ma.astype(float), levels=[0.5], colors=colour, linewidths=0.9)
        axes[row, 0].text(-0.08, 0.5, name.replace(": ", ":\n"), transform=axes[row, 0].transAxes,
                          rotation=90, ha="right", va="center", fontsize=8)  # fmt: skip
    parts = [f"rotation ±{augment_cfg.get('rotation_deg', 15.0):g}°", "left-right flip" if augment_cfg.get("flip", True) else "no flip",
             "zoom {:g}–{:g}".format(*augment_cfg.get("scale", (0.9, 1.1))), f"shift ±{100 * augment_cfg.get('shift', 0.1):g}%"]  # fmt: skip
    what = ", ".join(parts) if enabled else "augmentation is disabled in this run (augment.enabled: false)"
    fig.suptitle(f"Random augmentations, seed {seed}: {what}", fontsize=10)
    fig.tight_layout()
    return fig


def _histogram_with_cdf(ax: plt.Axes, data: np.ndarray, bins: np.ndarray, label: np.ndarray, xlabel: str, title: str) -> None:
    """A log histogram of all pixels, liver and lesion, with the cumulative distribution on a twin axis."""
    ax.hist(data.ravel(), bins=bins, color="0.6", label="all pixels", log=True)
    for value, name in ((1, "liver"), (2, "lesion")):
        mask = label >= value if value == 1 else label == value
        if mask.any():
            ax.hist(data[mask], bins=bins, histtype="step", color=LABEL_COLOURS[value], label=name, log=True, lw=1.2)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel("pixels (log)", fontsize=9)
    ax.tick_params(labelsize=8)
    twin = ax.twinx()
    ordered = np.sort(data.ravel())
    n_pixels = data.size
    twin.plot(ordered, np.arange(1, n_pixels + 1) / n_pixels, color="tab:blue", lw=1.2, label="cdf / L·W")
    twin.set_ylim(0, 1.02)
    twin.set_ylabel("cdf / L·W", fontsize=9, color="tab:blue")
    twin.tick_params(labelsize=8, colors="tab:blue")
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=7, loc="upper center", framealpha=0.8)
    ax.set_title(title, fontsize=9)


def _equalization_mapping(ax: plt.Axes, hu: np.ndarray, after: np.ndarray, label: np.ndarray, steps: PreprocessingSteps) -> None:
    """The mapping h(x) from HU to gray level against the linear window mapping, with its formula."""
    low, high = steps.hu_window
    top = steps.levels - 1
    n_pixels = hu.size
    values, counts = np.unique(hu, return_counts=True)
    cdf = np.cumsum(counts)
    cdf_min = int(cdf[0])
    h = np.floor((cdf - cdf_min) * top / max(n_pixels - cdf_min, 1) + 0.5) if n_pixels > cdf_min else np.zeros_like(cdf)
    ax.step(values, h, where="post", color="k", lw=1.3, label="equalization h(x)")
    ax.plot([low, high], [0, top], color="0.5", ls="--", lw=1.0, label="linear window mapping")
    ax.set_xlim(low, high)
    ax.set_ylim(-3, top + 3)
    ax.set_xlabel("HU (x)", fontsize=9)
    ax.set_ylabel("gray level h(x)", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=8, loc="upper left")
    text = ("h(x) = round((cdf(x) − cdf_min) / (L·W − cdf_min) · (S − 1))\n"
            f"L·W = {hu.shape[0]}·{hu.shape[1]} = {n_pixels} pixels\n"
            f"S = {steps.levels} gray levels\n"
            f"cdf_min = {cdf_min} pixels at {values[0]:.0f} HU → 0")  # fmt: skip
    liver, lesion = label == 1, label == 2
    if liver.any() and lesion.any():
        # Contrast between liver and lesion, in gray levels, before (linear window) and after.
        linear = (hu - low) * (top / (high - low))
        gap_before = abs(linear[lesion].mean() - linear[liver].mean())
        gap_after = abs(after[lesion].astype(float).mean() - after[liver].astype(float).mean())
        text += f"\nliver−lesion contrast: {gap_before:.0f} → {gap_after:.0f} gray levels"
    ax.text(0.97, 0.03, text, transform=ax.transAxes, va="bottom", ha="right", multialignment="left", fontsize=7.5,
            bbox=dict(boxstyle="round", facecolor="white", edgecolor="0.7"))  # fmt: skip
    ax.set_title("the mapping from HU to gray level", fontsize=9)


def fig4_equalization(steps: PreprocessingSteps, stage: int = 1) -> plt.Figure:
    """The paper's Figs. 4 and 5: a slice before and after histogram equalization.

    ``stage=1`` shows the whole resized slice (Fig. 4), ``stage=2`` the liver ROI
    (Fig. 5, the liver-lesion contrast). Left: the windowed slice, mapped linearly
    to gray; middle: equalized; below each, its histogram (log scale; all pixels in
    gray, liver in green, lesion in red) with its cumulative distribution. Right:
    the mapping h(x) from HU to gray level, against the linear window mapping.
    """
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 (whole slice) or 2 (liver ROI), got {stage!r}")
    before, after, label = (
        (steps.resized, steps.equalized, steps.label_resized)
        if stage == 1
        else (steps.roi_resized, steps.roi_equalized, steps.roi_label)
    )
    low, high = steps.hu_window
    top = steps.levels - 1
    # The HU the equalization saw: prepare_slices rounds resampled HU to 0.01 HU.
    hu = np.round(before.astype(np.float64), 2)

    fig = plt.figure(figsize=(13.0, 7.4))
    grid = GridSpec(2, 3, figure=fig, height_ratios=(1.25, 1.0), width_ratios=(1, 1, 1.15))
    what = "whole slice (stage 1)" if stage == 1 else "liver ROI (stage 2)"
    ax = fig.add_subplot(grid[0, 0])
    show_gray(ax, before, low, high, f"before: HU window [{low:.0f}, {high:.0f}] mapped linearly")
    outline(ax, label, linewidth=0.7)
    ax = fig.add_subplot(grid[0, 1])
    show_gray(ax, after, 0, top, "after: histogram equalization h(x)")
    outline(ax, label, linewidth=0.7)
    histograms = (
        ("before", hu, np.linspace(low, high, 101), "HU"),
        ("after", after.astype(float), np.arange(-0.5, top + 1.5, (top + 1) / 100), "gray level"),
    )
    for column, (when, data, bins, xlabel) in enumerate(histograms):
        _histogram_with_cdf(fig.add_subplot(grid[1, column]), data, bins, label, xlabel,
                            f"{when}: histogram and cumulative distribution")  # fmt: skip
    _equalization_mapping(fig.add_subplot(grid[:, 2]), hu, after, label, steps)
    fig.suptitle(f"Histogram equalization, {what}: case {steps.case_id}, plane {steps.plane}", fontsize=11)
    fig.tight_layout()
    return fig
