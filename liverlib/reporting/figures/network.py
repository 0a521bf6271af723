"""Notebook 03's figures: the Mixed-UNet diagram, and max, average and mixed pooling on toy and real maps."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.gridspec import GridSpec
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from scipy.ndimage import correlate

from liverlib.reporting.figures.common import show_gray

# Layout of unet_diagram, in data units: a level's box, and the step between box centres.
_BOX_WIDTH, _BOX_HEIGHT, _STEP_X, _STEP_Y = 2.3, 0.95, 3.05, 1.45
_Centres = dict[int, tuple[float, float]]  # unet_diagram's box centres (x, y), by index along the U


def _diagram_box(ax: plt.Axes, x: float, y: float, text: str, face: str, edge: str = "0.25") -> None:
    """A rounded box of the diagram centred at (x, y), with its text."""
    width, height = _BOX_WIDTH, _BOX_HEIGHT
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.05",
                                facecolor=face, edgecolor=edge, linewidth=1.0))  # fmt: skip
    ax.text(x, y, text, ha="center", va="center", fontsize=8)


def _diagram_arrow(ax: plt.Axes, a, b, colour, style="-|>", ls="-", text=None, text_xy=None) -> None:
    """An arrow of the diagram from ``a`` to ``b``, with an optional label on a white background at ``text_xy``."""
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=12, color=colour, linestyle=ls, lw=1.4))
    if text:
        ax.text(*text_xy, text, fontsize=7, color=colour, ha="center", va="center",
                bbox=dict(facecolor="white", edgecolor="none", pad=0.6))  # fmt: skip


def _diagram_levels(ax: plt.Axes, base_filters: int, depth: int, dropout: float, size: int, norm: str) -> _Centres:
    """Draw one box per level of the U (encoder, bottom, decoder) and return their centres by index."""
    levels = 2 * depth + 1
    centres = {}
    for index in range(levels):
        level = index if index <= depth else 2 * depth - index  # 0 at the top
        filters = base_filters * 2**level
        side = size // 2**level
        x, y = index * _STEP_X / 2 + 0.0, -level * _STEP_Y
        centres[index] = (x, y)
        kind = "encoder" if index < depth else "bottom" if index == depth else "decoder"
        face = {"encoder": "#dbe9f6", "bottom": "#fde0c5", "decoder": "#dff2dc"}[kind]
        drop = dropout > 0 and (index == depth - 1 or index == depth)
        text = f"level {index + 1}\n2× conv 3×3{norm} + ReLU\n{filters} ch, {side}×{side}" + ("\n+ dropout %g" % dropout if drop else "")
        _diagram_box(ax, x, y, text, face, edge="#d62728" if drop else "0.25")
    return centres


def _diagram_connections(ax: plt.Axes, centres: _Centres, depth: int, pool_name: str, pool_colour: str) -> None:
    """Draw pooling arrows down the encoder, up-convolutions up the decoder and the skips across."""
    height, levels = _BOX_HEIGHT, 2 * depth + 1
    for index in range(levels - 1):  # vertical arrows where consecutive boxes overlap
        (x0, y0), (x1, y1) = centres[index], centres[index + 1]
        x = (x0 + x1) / 2
        if index < depth:  # down: pooling, label on the left
            _diagram_arrow(ax, (x, y0 - height / 2 - 0.04), (x, y1 + height / 2 + 0.06), pool_colour)
            ax.text(x - 0.12, (y0 + y1) / 2, pool_name, fontsize=7, color=pool_colour, ha="right", va="center")
        else:  # up: upsampling and a 2x2 convolution, label on the right
            _diagram_arrow(ax, (x, y0 + height / 2 + 0.04), (x, y1 - height / 2 - 0.06), "#2ca02c")
            ax.text(x + 0.12, (y0 + y1) / 2, "upsample 2×2 + conv 2×2, ReLU", fontsize=7, color="#2ca02c",
                    ha="left", va="center")  # fmt: skip
    for index in range(depth):  # skips
        (x0, y0), (x1, _) = centres[index], centres[levels - 1 - index]
        _diagram_arrow(ax, (x0 + _BOX_WIDTH / 2 + 0.08, y0), (x1 - _BOX_WIDTH / 2 - 0.08, y0), "0.45", ls="--",
                       text="skip: copy + concatenate" if index == 0 else None, text_xy=((x0 + x1) / 2, y0 + 0.18))  # fmt: skip


def _diagram_input_output(ax: plt.Axes, centres: _Centres, size: int, output_prior: float) -> None:
    """Draw the input above the first box and the 1×1 sigmoid output above the last one."""
    height = _BOX_HEIGHT
    x_in, y_in = centres[0]
    x_out, y_out = centres[len(centres) - 1]
    ax.text(x_in, y_in + height / 2 + 0.55, f"input {size}×{size}×1\n(equalized slice)", ha="center", va="bottom", fontsize=8)
    _diagram_arrow(ax, (x_in, y_in + height / 2 + 0.5), (x_in, y_in + height / 2 + 0.1), "0.25")
    _diagram_arrow(ax, (x_out, y_out + height / 2 + 0.1), (x_out, y_out + height / 2 + 0.5), "0.25")
    ax.text(x_out, y_out + height / 2 + 0.55, f"conv 1×1 + sigmoid\noutput {size}×{size}×1 in [0, 1]"
            + ("" if output_prior == 0.5 else f"\n(starts at p = {output_prior:g})"),
            ha="center", va="bottom", fontsize=8)  # fmt: skip


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
    """A schematic of the (Mixed-)U-Net of :func:`liverlib.networks.unet.mixed_unet`.

    One box per level (two 3×3 convolutions with ReLU), with its filters and
    feature-map size; pooling arrows down the encoder, up-convolution arrows up
    the decoder, skip connections across, dropout marked, and the 1×1 sigmoid
    output. Takes the ``model`` config section (``**config["model"]``) and the
    input size.
    """
    if depth < 1 or base_filters < 1 or size % 2**depth:
        raise ValueError(f"need depth >= 1, base_filters >= 1 and size divisible by 2**depth, got {depth}, {base_filters}, {size}")
    norm = {"none": "", "instance": " + IN", "batch": " + BN"}[normalization]
    pool_name = {"mixed": "mixed pool 2×2", "max": "max pool 2×2", "avg": "avg pool 2×2"}[pooling]
    pool_colour = {"mixed": "#d62728", "max": "#1f77b4", "avg": "#9467bd"}[pooling]
    width, height = _BOX_WIDTH, _BOX_HEIGHT
    levels = 2 * depth + 1
    fig, ax = plt.subplots(figsize=(1.45 * levels + 1.8, 1.0 * depth + 2.9))
    centres = _diagram_levels(ax, base_filters, depth, dropout, size, norm)
    _diagram_connections(ax, centres, depth, pool_name, pool_colour)
    _diagram_input_output(ax, centres, size, output_prior)
    if pooling == "mixed":
        per = {"channel": "per sample and feature map", "region": "per pooling window", "call": "per batch"}[mixed_granularity]
        rule = {"expectation": "the expectation 0.5·max + 0.5·avg", "majority": "the type chosen more often in training",
                "max": "max pooling", "avg": "average pooling"}[mixed_inference]  # fmt: skip
        ax.text(centres[0][0] - width / 2, -depth * _STEP_Y, f"mixed pooling: in training, max or average\nat random {per};"
                f"\nat inference, {rule}", fontsize=7.5, color=pool_colour, ha="left", va="center")  # fmt: skip
    xs = [c[0] for c in centres.values()]
    ax.set_xlim(min(xs) - width / 2 - 0.3, max(xs) + width / 2 + 0.3)
    ax.set_ylim(-depth * _STEP_Y - height / 2 - 0.3, height / 2 + 1.4)
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
    x = np.asarray(image, np.float32) / np.float32(levels - 1)
    if model_path is not None and Path(model_path).is_file():
        # Keras only here: importing it takes seconds, and the other figures do not need it.
        import keras

        from liverlib.networks import load_model

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
    """Max, average and mixed pooling of real feature maps, with :class:`liverlib.networks.MixedPooling2D`.

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
    # Keras only here: importing it takes seconds, and the other figures do not need it.
    import keras

    from liverlib.networks import MixedPooling2D

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
    show_gray(ax, image, 0, levels - 1, f"input slice {image.shape[0]}×{image.shape[1]}")
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
