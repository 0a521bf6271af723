"""The paper's figures: one saving function and plain plotting functions over arrays.

Every figure is saved by :func:`save_figure`, with a fixed dpi and no
timestamp or version in the PNG metadata, so reruns give identical files.
"""

from __future__ import annotations

from dataclasses import dataclass
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


# --------------------------------------------------------------------------- 06 · the CRF


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
        Ignored, so that the dict of :func:`liverlib.inference.load_before_after`
        can be passed as ``**example``.

    Returns
    -------
    matplotlib Figure
        Four panels. Outlines: liver green, lesion red. The last panel shows the
        voxels the CRF added (blue) or removed (orange), liver and lesion alike.
    """
    from liverlib.metrics import dice

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


# --------------------------------------------------------------------------- notebook 02: preprocessing



@dataclass(frozen=True, eq=False)
class PreprocessingSteps:
    """The intermediate images of one slice through the paper's preprocessing (for display).

    Stage 1 (whole slice) and stage 2 (liver ROI), each step as
    :func:`liverlib.preprocess.prepare_slices` computes it: ``window`` -> ``resize``
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
    roi: "Roi"  # noqa: F821
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
    from liverlib import preprocess
    from liverlib.cache import normalize_config

    cfg = normalize_config(preprocess_cfg)
    if case.label is None:
        raise ValueError(f"case {case.case_id} has no segmentation; the preprocessing figures need one")
    label = np.asarray(case.label)
    z = representative_slice(label) if plane is None else int(plane)
    if not 0 <= z < label.shape[0]:
        raise ValueError(f"plane must be in 0..{label.shape[0] - 1}, got {plane!r}")
    if not (label > 0).any():
        raise ValueError(f"case {case.case_id} has no liver: there is no ROI to show")
    options = {**preprocess.image_options(cfg), "equalize": True}
    raw = np.asarray(case.image[z], np.float32)
    windowed = preprocess.window(raw, cfg["hu_window"])
    roi = preprocess.liver_roi(label > 0, case.spacing, cfg["roi_margin_mm"])
    roi_windowed = preprocess.crop(windowed, roi)
    return PreprocessingSteps(
        case_id=int(case.case_id),
        plane=z,
        raw=raw,
        label=label[z],
        windowed=windowed,
        resized=preprocess.resize_slices(windowed, cfg["size"]),
        equalized=preprocess.prepare_slices(raw[None], **options)[0],
        label_resized=preprocess.resize_slices(label[z], cfg["size"], order=0),
        roi=roi,
        roi_resized=preprocess.resize_slices(roi_windowed, cfg["size"]),
        roi_equalized=preprocess.prepare_slices(preprocess.crop(raw, roi)[None], **options)[0],
        roi_label=preprocess.resize_slices(preprocess.crop(label[z], roi), cfg["size"], order=0),
        hu_window=tuple(cfg["hu_window"]),
        levels=cfg["levels"],
        equalize=cfg["equalize"],
    )


def _gray(ax: plt.Axes, image: np.ndarray, vmin: float, vmax: float, title: str) -> None:
    ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)


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
    _gray(axes[0, 1], steps.windowed, low, high, f"HU window [{low:.0f}, {high:.0f}]\n{rows}×{cols}")
    _gray(axes[0, 2], steps.resized, low, high, f"resized to {size[0]}×{size[1]}\n(antialiased linear)")
    used = "input" if steps.equalize else "input if preprocess.equalize were on"
    _gray(axes[0, 3], steps.equalized, 0, top_levels, f"histogram equalized\nstage-1 {used}, {size[0]}×{size[1]}")
    outline(axes[0, 3], steps.label_resized, linewidth=0.8)

    roi = steps.roi
    ax = axes[1, 0]
    _gray(ax, steps.windowed, low, high, f"liver ROI (margin, squared)\nrows {roi.row0}:{roi.row1}, columns {roi.col0}:{roi.col1}")
    outline(ax, steps.label, linewidth=0.8)
    ax.add_patch(
        plt.Rectangle((roi.col0 - 0.5, roi.row0 - 0.5), roi.width, roi.height, fill=False, edgecolor="#ffbf00", linewidth=1.5)
    )
    cropped = steps.windowed[roi.row0 : roi.row1, roi.col0 : roi.col1]
    _gray(axes[1, 1], cropped, low, high, f"ROI crop\n{roi.height}×{roi.width}")
    _gray(axes[1, 2], steps.roi_resized, low, high, f"ROI resized to {size[0]}×{size[1]}")
    _gray(axes[1, 3], steps.roi_equalized, 0, top_levels, f"histogram equalized\nstage-2 {used}, {size[0]}×{size[1]}")
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
        ``scale``, ``shift`` (see :func:`liverlib.augment.augment_batch`).
    """
    from liverlib.augment import augment_batch

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
            _gray(ax, im, 0, levels - 1, "original" if column == 0 else f"random {column}")
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


def fig4_equalization(steps: PreprocessingSteps, stage: int = 1) -> plt.Figure:
    """The paper's Figs. 4 and 5: a slice before and after histogram equalization.

    ``stage=1`` shows the whole resized slice (Fig. 4), ``stage=2`` the liver ROI
    (Fig. 5, the liver-lesion contrast). Left: the windowed slice, mapped linearly
    to gray; middle: equalized; below each, its histogram (log scale; all pixels in
    gray, liver in green, lesion in red) with its cumulative distribution. Right:
    the mapping h(x) from HU to gray level, against the linear window mapping.
    """
    from matplotlib.gridspec import GridSpec

    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 (whole slice) or 2 (liver ROI), got {stage!r}")
    before, after, label = (
        (steps.resized, steps.equalized, steps.label_resized)
        if stage == 1
        else (steps.roi_resized, steps.roi_equalized, steps.roi_label)
    )
    low, high = steps.hu_window
    top = steps.levels - 1
    n_pixels = before.size
    # The HU the equalization saw: prepare_slices rounds resampled HU to 0.01 HU.
    hu = np.round(before.astype(np.float64), 2)
    values, counts = np.unique(hu, return_counts=True)
    cdf = np.cumsum(counts)
    cdf_min = int(cdf[0])

    fig = plt.figure(figsize=(13.0, 7.4))
    grid = GridSpec(2, 3, figure=fig, height_ratios=(1.25, 1.0), width_ratios=(1, 1, 1.15))
    what = "whole slice (stage 1)" if stage == 1 else "liver ROI (stage 2)"
    ax = fig.add_subplot(grid[0, 0])
    _gray(ax, before, low, high, f"before: HU window [{low:.0f}, {high:.0f}] mapped linearly")
    outline(ax, label, linewidth=0.7)
    ax = fig.add_subplot(grid[0, 1])
    _gray(ax, after, 0, top, "after: histogram equalization h(x)")
    outline(ax, label, linewidth=0.7)

    for column, (data, bins, xlabel) in enumerate(
        ((hu, np.linspace(low, high, 101), "HU"), (after.astype(float), np.arange(-0.5, top + 1.5, (top + 1) / 100), "gray level"))
    ):
        ax = fig.add_subplot(grid[1, column])
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
        twin.plot(ordered, np.arange(1, n_pixels + 1) / n_pixels, color="tab:blue", lw=1.2, label="cdf / L·W")
        twin.set_ylim(0, 1.02)
        twin.set_ylabel("cdf / L·W", fontsize=9, color="tab:blue")
        twin.tick_params(labelsize=8, colors="tab:blue")
        handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(handles=handles, fontsize=7, loc="upper center", framealpha=0.8)
        ax.set_title(("before" if column == 0 else "after") + ": histogram and cumulative distribution", fontsize=9)

    ax = fig.add_subplot(grid[:, 2])
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
            f"L·W = {before.shape[0]}·{before.shape[1]} = {n_pixels} pixels\n"
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
    fig.suptitle(f"Histogram equalization, {what}: case {steps.case_id}, plane {steps.plane}", fontsize=11)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- notebook 03: the Mixed-UNet


def unet_diagram(
    base_filters: int = 64,
    depth: int = 4,
    dropout: float = 0.5,
    pooling: str = "mixed",
    size: int = 96,
    mixed_inference: str = "expectation",
    mixed_granularity: str = "channel",
    normalization: str = "none",
    output_prior: float = 0.5,
) -> plt.Figure:
    """A schematic of the (Mixed-)U-Net of :func:`liverlib.model.mixed_unet`.

    One box per level (two 3×3 convolutions with ReLU), with its filters and
    feature-map size; pooling arrows down the encoder, up-convolution arrows up
    the decoder, skip connections across, dropout marked, and the 1×1 sigmoid
    output. Takes the ``model`` config section (``**config["model"]``) and the
    input size.
    """
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    if depth < 1 or base_filters < 1 or size % 2**depth:
        raise ValueError(f"need depth >= 1, base_filters >= 1 and size divisible by 2**depth, got {depth}, {base_filters}, {size}")
    norm = {"none": "", "instance": " + IN", "batch": " + BN"}[normalization]
    pool_name = {"mixed": "mixed pool 2×2", "max": "max pool 2×2", "avg": "avg pool 2×2"}[pooling]
    pool_colour = {"mixed": "#d62728", "max": "#1f77b4", "avg": "#9467bd"}[pooling]
    width, height, dx, dy = 2.3, 0.95, 3.05, 1.45
    levels = 2 * depth + 1
    fig, ax = plt.subplots(figsize=(1.45 * levels + 1.8, 1.0 * depth + 2.9))

    def box(x, y, text, face, edge="0.25"):
        ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.05",
                                    facecolor=face, edgecolor=edge, linewidth=1.0))  # fmt: skip
        ax.text(x, y, text, ha="center", va="center", fontsize=8)

    def arrow(a, b, colour, style="-|>", ls="-", text=None, text_xy=None, **kw):
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=12, color=colour, linestyle=ls, lw=1.4, **kw))
        if text:
            ax.text(*text_xy, text, fontsize=7, color=colour, ha="center", va="center",
                    bbox=dict(facecolor="white", edgecolor="none", pad=0.6))  # fmt: skip

    centres = {}
    for index in range(levels):
        level = index if index <= depth else 2 * depth - index  # 0 at the top
        filters = base_filters * 2**level
        side = size // 2**level
        x, y = index * dx / 2 + 0.0, -level * dy
        centres[index] = (x, y)
        kind = "encoder" if index < depth else "bottom" if index == depth else "decoder"
        face = {"encoder": "#dbe9f6", "bottom": "#fde0c5", "decoder": "#dff2dc"}[kind]
        drop = dropout > 0 and (index == depth - 1 or index == depth)
        text = f"level {index + 1}\n2× conv 3×3{norm} + ReLU\n{filters} ch, {side}×{side}" + ("\n+ dropout %g" % dropout if drop else "")
        box(x, y, text, face, edge="#d62728" if drop else "0.25")

    for index in range(levels - 1):  # vertical arrows where consecutive boxes overlap
        (x0, y0), (x1, y1) = centres[index], centres[index + 1]
        x = (x0 + x1) / 2
        if index < depth:  # down: pooling, label on the left
            arrow((x, y0 - height / 2 - 0.04), (x, y1 + height / 2 + 0.06), pool_colour)
            ax.text(x - 0.12, (y0 + y1) / 2, pool_name, fontsize=7, color=pool_colour, ha="right", va="center")
        else:  # up: upsampling and a 2x2 convolution, label on the right
            arrow((x, y0 + height / 2 + 0.04), (x, y1 - height / 2 - 0.06), "#2ca02c")
            ax.text(x + 0.12, (y0 + y1) / 2, "upsample 2×2 + conv 2×2, ReLU", fontsize=7, color="#2ca02c",
                    ha="left", va="center")  # fmt: skip
    for index in range(depth):  # skips
        (x0, y0), (x1, _) = centres[index], centres[levels - 1 - index]
        arrow((x0 + width / 2 + 0.08, y0), (x1 - width / 2 - 0.08, y0), "0.45", ls="--",
              text="skip: copy + concatenate" if index == 0 else None, text_xy=((x0 + x1) / 2, y0 + 0.18))  # fmt: skip

    x_in, y_in = centres[0]
    x_out, y_out = centres[levels - 1]
    ax.text(x_in, y_in + height / 2 + 0.55, f"input {size}×{size}×1\n(equalized slice)", ha="center", va="bottom", fontsize=8)
    arrow((x_in, y_in + height / 2 + 0.5), (x_in, y_in + height / 2 + 0.1), "0.25")
    arrow((x_out, y_out + height / 2 + 0.1), (x_out, y_out + height / 2 + 0.5), "0.25")
    ax.text(x_out, y_out + height / 2 + 0.55, f"conv 1×1 + sigmoid\noutput {size}×{size}×1 in [0, 1]"
            + ("" if output_prior == 0.5 else f"\n(starts at p = {output_prior:g})"),
            ha="center", va="bottom", fontsize=8)  # fmt: skip
    if pooling == "mixed":
        per = {"channel": "per sample and feature map", "region": "per pooling window", "call": "per batch"}[mixed_granularity]
        rule = {"expectation": "the expectation 0.5·max + 0.5·avg", "majority": "the type chosen more often in training",
                "max": "max pooling", "avg": "average pooling"}[mixed_inference]  # fmt: skip
        ax.text(centres[0][0] - width / 2, -depth * dy, f"mixed pooling: in training, max or average\nat random {per};"
                f"\nat inference, {rule}", fontsize=7.5, color=pool_colour, ha="left", va="center")  # fmt: skip
    xs = [c[0] for c in centres.values()]
    ax.set_xlim(min(xs) - width / 2 - 0.3, max(xs) + width / 2 + 0.3)
    ax.set_ylim(-depth * dy - height / 2 - 0.3, height / 2 + 1.4)
    ax.set_aspect("equal")
    ax.set_axis_off()
    title = {"mixed": "Mixed-UNet", "max": "U-Net (max pooling)", "avg": "U-Net (average pooling)"}[pooling]
    ax.set_title(f"{title}: {levels} levels ({depth} down, bottom, {depth} up), widths "
                 + "-".join(str(base_filters * 2**k) for k in range(depth + 1)), fontsize=10)  # fmt: skip
    fig.tight_layout()
    return fig


def _number_grid(ax: plt.Axes, values: np.ndarray, x0: float, cell: float, vmax: float,
                 highlight: Sequence[tuple[int, int]] = (), title: str = "") -> None:
    """Draw a small grid of numbers, shaded by value, with its top-left corner at (x0, 0)."""
    cmap = plt.get_cmap("Greys")
    for (r, c), v in np.ndenumerate(values):
        ax.add_patch(plt.Rectangle((x0 + c * cell, r * cell), cell, cell, facecolor=cmap(0.85 * v / vmax),
                                   edgecolor="0.6", linewidth=0.6))  # fmt: skip
        ax.text(x0 + (c + 0.5) * cell, (r + 0.5) * cell, f"{v:g}", ha="center", va="center", fontsize=11,
                color="white" if v > 0.55 * vmax else "black")  # fmt: skip
    side = values.shape[0] * cell
    for r, c in highlight:
        ax.add_patch(plt.Rectangle((x0 + c * cell, r * cell), cell, cell, fill=False, edgecolor="#ff7f0e", linewidth=2.2))
    ax.add_patch(plt.Rectangle((x0, 0), side, side, fill=False, edgecolor="k", linewidth=1.2))
    if title:
        ax.text(x0 + side / 2, -0.25, title, ha="center", va="bottom", fontsize=9)


def pooling_toy_examples(p_max: float = 0.5) -> plt.Figure:
    """The paper's pooling examples (its discussion of Fig. 2(a)/(b), after Yu et al. 2014).

    Two 4×4 feature maps pooled 2×2 into 2×2 maps, by max, average and mixed
    pooling (training: max or average, chosen at random per feature map;
    inference: the expectation ``p_max·max + (1 − p_max)·avg``). Each pooled
    cell is drawn over the 2×2 window it summarizes.

    (a) Most elements high: a weak response (a darker spot in bright tissue) fills
    the top-right window; max pooling returns the same high value for every
    window, so the distinguishing feature vanishes.
    (b) Mostly zeros: a thin, strong response (an edge) in windows that are
    otherwise zero; average pooling divides it by four, washing the contrast out.
    """
    examples = (
        ("(a) most elements high: max pooling loses the weak spot in the top-right window",
         np.array([[9, 8, 9, 1], [8, 9, 1, 1], [9, 9, 8, 9], [9, 8, 9, 9]], float), [(0, 1)]),
        ("(b) many zeros: average pooling washes out the edge",
         np.array([[0, 0, 0, 0], [0, 8, 0, 0], [0, 0, 8, 0], [0, 0, 0, 0]], float), [(0, 0), (1, 1)]),
    )  # fmt: skip
    fig, axes = plt.subplots(2, 1, figsize=(11.0, 5.4))
    columns = ("feature map 4×4, 2×2 windows", "max pooling", "average pooling",
               f"mixed pooling, inference:\n{p_max:g}·max + {1 - p_max:g}·avg")  # fmt: skip
    for ax, (caption, grid, spots) in zip(axes, examples):
        windows = grid.reshape(2, 2, 2, 2).transpose(0, 2, 1, 3).reshape(2, 2, 4)
        pooled_max, pooled_avg = windows.max(axis=2), windows.mean(axis=2)
        outputs = (pooled_max, pooled_avg, pooled_avg + p_max * (pooled_max - pooled_avg))
        vmax = grid.max()
        _number_grid(ax, grid, 0.0, 1.0, vmax, title=columns[0])
        for r, c in spots:  # the window(s) that carry the feature
            ax.add_patch(plt.Rectangle((2 * c, 2 * r), 2, 2, fill=False, edgecolor="#ff7f0e", linewidth=2.2, zorder=3))
        ax.plot([0, 4], [2, 2], color="#d62728", lw=1.6)  # the pooling windows
        ax.plot([2, 2], [0, 4], color="#d62728", lw=1.6)
        for index, values in enumerate(outputs, start=1):
            x0 = 6.0 * index
            _number_grid(ax, values, x0, 2.0, vmax, spots, columns[index])
        ax.text(0.0, -1.35, caption, fontsize=10, ha="left", va="bottom", weight="bold")
        ax.text(24.2, 2.0, f"training: each forward pass\nuses max (p = {p_max:g}) or\naverage (p = {1 - p_max:g})"
                "\nfor the whole feature map;\nthe inference output is\nthe expected value", fontsize=8.5,
                va="center", ha="left")  # fmt: skip
        ax.set_xlim(-0.2, 29.5)
        ax.set_ylim(4.2, -1.9)
        ax.set_aspect("equal")
        ax.set_axis_off()
    fig.tight_layout()
    return fig


EDGE_KERNELS = {
    "edge ↓ (bright above dark)": np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], np.float32),
    "edge ↑ (dark above bright)": np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], np.float32),
    "edge → (bright left of dark)": np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float32),
    "edge ← (dark left of bright)": np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32),
}


def first_layer_features(
    image: np.ndarray, model_path: str | Path | None = None, channels: int = 4, levels: int = 256
) -> tuple[np.ndarray, list[str], str]:
    """Feature maps of a CT slice such as the first layer of a CNN computes.

    With a trained model (``model_path`` exists), the ``channels`` most active maps
    of its first level (``encoder1_conv2``); otherwise four oriented Sobel edge
    filters followed by ReLU, the kind of filter first layers learn.

    Parameters
    ----------
    image : ndarray, shape (rows, columns)
        A network input (gray levels ``0..levels-1`` from the slice cache).
    model_path : path, optional
        A ``liver.keras`` file; ignored if it does not exist.
    channels : int
        How many maps to return (at most 4 without a model).
    levels : int
        Gray levels; the image is scaled to [0, 1] as in training.

    Returns
    -------
    features : ndarray of float32, shape (rows, columns, channels), >= 0
    names : list of str
    source : str
        Where the maps come from, for the figure's title.
    """
    from scipy.ndimage import correlate

    x = np.asarray(image, np.float32) / np.float32(levels - 1)
    if model_path is not None and Path(model_path).is_file():
        import keras

        from liverlib.model import load_model

        trained = load_model(model_path, compile=False)
        probe = keras.Model(trained.input, trained.get_layer("encoder1_conv2").output)
        maps = keras.ops.convert_to_numpy(probe(x[None, :, :, None], training=False))[0]
        order = np.argsort(maps.std(axis=(0, 1)))[::-1][:channels]
        return maps[..., order], [f"channel {k}" for k in order], f"first level of the trained model {Path(model_path).name}"
    kernels = list(EDGE_KERNELS.items())[:channels]
    maps = np.stack([np.maximum(correlate(x, k, mode="nearest"), 0.0) for _, k in kernels], axis=-1)
    return maps.astype(np.float32), [name for name, _ in kernels], "oriented Sobel edge filters + ReLU"


def pooling_comparison(
    image: np.ndarray,
    features: np.ndarray,
    names: Sequence[str] | None = None,
    source: str = "",
    seed: int = 0,
    p_max: float = 0.5,
    levels: int = 256,
) -> plt.Figure:
    """Max, average and mixed pooling of real feature maps, with :class:`liverlib.model.MixedPooling2D`.

    Each row is one feature map: the map, max pooling, average pooling, mixed
    pooling in training mode (one random draw per feature map: the title says
    which pooling it chose) and mixed pooling at inference (the expectation).
    All panels of a row share one gray scale, so the lower contrast of average
    pooling shows.

    Parameters
    ----------
    image : ndarray, (rows, columns)
        The slice the maps come from (shown on the left).
    features : ndarray, (rows, columns, channels)
    names : sequence of str, optional
        One name per channel.
    source : str
        Where the maps come from (title).
    seed : int
        Seed of the mixed-pooling layer's draws.
    p_max : float
        Probability of max pooling in training.
    levels : int
        Gray levels of ``image`` (its display range).
    """
    import keras
    from matplotlib.gridspec import GridSpec

    from liverlib.model import MixedPooling2D

    features = np.asarray(features, np.float32)
    if features.ndim != 3:
        raise ValueError(f"features must be (rows, columns, channels), got shape {features.shape}")
    channels = features.shape[-1]
    names = list(names) if names is not None else [f"channel {k}" for k in range(channels)]
    batch = features[None]
    numpy = keras.ops.convert_to_numpy
    pooled_max = numpy(keras.layers.MaxPooling2D(2)(batch))[0]
    pooled_avg = numpy(keras.layers.AveragePooling2D(2)(batch))[0]
    layer = MixedPooling2D(2, p_max=p_max, granularity="channel", inference="expectation", seed=seed)
    training = numpy(layer(batch, training=True))[0]
    inference = numpy(layer(batch, training=False))[0]
    chose_max = np.isclose(training, pooled_max).all(axis=(0, 1)) & ~np.isclose(training, pooled_avg).all(axis=(0, 1))

    fig = plt.figure(figsize=(14.0, 2.55 * channels + 0.6))
    grid = GridSpec(channels, 6, figure=fig, width_ratios=(1.6, 1, 1, 1, 1, 1))
    ax = fig.add_subplot(grid[:, 0])
    _gray(ax, image, 0, levels - 1, f"input slice {image.shape[0]}×{image.shape[1]}")
    for row in range(channels):
        vmax = float(features[..., row].max()) or 1.0
        panels = (
            (features[..., row], f"{names[row]}\n{features.shape[0]}×{features.shape[1]}"),
            (pooled_max[..., row], "max pooling 2×2"),
            (pooled_avg[..., row], "average pooling 2×2"),
            (training[..., row], f"mixed, training\n(this draw: {'max' if chose_max[row] else 'average'})"),
            (inference[..., row], f"mixed, inference\n{p_max:g}·max + {1 - p_max:g}·avg"),
        )
        for column, (data, title) in enumerate(panels, start=1):
            ax = fig.add_subplot(grid[row, column])
            ax.imshow(data, cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_axis_off()
            ax.set_title(title, fontsize=8)
            if column > 1:
                ax.text(0.02, 0.02, f"mean {data.mean():.3f}\npeak {data.max():.2f}", transform=ax.transAxes,
                        fontsize=6.5, color="white", va="bottom")  # fmt: skip
    fig.suptitle(f"Pooling a real feature map ({source}); mixed pooling drawn with seed {seed}", fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- evaluation (notebook 07)


def _load_scored_case(run_dir, case_id: int, crf: int = 1):
    """The image, reference and prediction of one scored test case of a run."""
    from liverlib.data import load_case, load_label
    from liverlib.evaluate import prediction_path
    from liverlib.runfolder import dataset_cases, load_run

    files = {c.case_id: c for c in dataset_cases(load_run(run_dir))}[case_id]
    case = load_case(files)
    return case, load_label(prediction_path(run_dir, case_id, crf), case.geometry)


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
