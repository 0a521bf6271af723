"""The Mixed-UNet of the paper: a U-Net of 4 levels down, a bottom and 4 up, whose pooling is mixed."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from liverlib.networks.pooling import (
    GRANULARITIES,
    INFERENCE_RULES,
    MixedPooling2D,
    check_choice,
)

__all__ = ["mixed_unet", "POOLINGS", "NORMALIZATIONS"]

POOLINGS = ("mixed", "max", "avg")
NORMALIZATIONS = ("none", "instance", "batch")


# -- the network -------------------------------------------------------------


def _conv(x, filters: int, kernel_size: int, name: str, normalization: str = "none"):
    """Convolution and ReLU; with a normalization, Conv (no bias) -> Norm -> ReLU."""
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        activation="relu" if normalization == "none" else None,
        use_bias=normalization == "none",  # the normalization's offset replaces the bias
        padding="same",
        kernel_initializer="he_normal",
        name=name,
    )(x)
    if normalization == "none":
        return x
    if normalization == "batch":
        x = keras.layers.BatchNormalization(name=f"{name}_norm")(x)
    else:  # instance normalization: one group per channel
        x = keras.layers.GroupNormalization(groups=filters, name=f"{name}_norm")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


def _conv_block(x, filters: int, prefix: str, normalization: str = "none"):
    """One U-Net level: two 3x3 convolutions with ReLU."""
    x = _conv(x, filters, 3, f"{prefix}_conv1", normalization)
    return _conv(x, filters, 3, f"{prefix}_conv2", normalization)


def _pooling_layer(pooling: str, mixed_inference: str, mixed_granularity: str, name: str):
    if pooling == "max":
        return keras.layers.MaxPooling2D(2, name=name)
    if pooling == "avg":
        return keras.layers.AveragePooling2D(2, name=name)
    return MixedPooling2D(
        2, granularity=mixed_granularity, inference=mixed_inference, name=name
    )


def mixed_unet(
    input_shape: Sequence[int] = (96, 96, 1),
    base_filters: int = 64,
    depth: int = 4,
    dropout: float = 0.5,
    pooling: str = "mixed",
    mixed_inference: str = "expectation",
    mixed_granularity: str = "channel",
    normalization: str = "none",
    output_prior: float = 0.5,
    name: str | None = None,
) -> keras.Model:
    """Build the Mixed-UNet of the paper (section 3.4, Table 2).

    ``2 * depth + 1`` levels (9 for ``depth=4``: 4 down, the bottom, 4 up),
    each two 3x3 convolutions (ReLU, "same" padding, He-normal init) with
    ``base_filters * 2**level`` filters. On the way down each level ends in a
    2x2 pooling (mixed by default); on the way up each level starts with an
    "up-convolution" (2x upsampling then a 2x2 convolution with ReLU), then
    concatenates the encoder output of the same resolution (skip connection).
    Dropout sits where the classic Keras U-Net puts it: after the deepest
    encoder level (before its pooling, so the skip connection carries the
    dropped-out features too) and after the bottom. A 1x1 convolution with a
    sigmoid gives the per-pixel liver (or lesion) probability, in float32 even
    under a mixed-precision policy.

    Parameters
    ----------
    input_shape : (rows, columns, channels), default (96, 96, 1)
        Channels-last; rows and columns must be divisible by ``2**depth``.
    base_filters : int, default 64
        Filters of the first level (the paper's U-Net: 64 ... 1024).
    depth : int, default 4
        Number of poolings.
    dropout : float, default 0.5
        Dropout rate; 0 leaves the dropout layers out.
    pooling : {"mixed", "max", "avg"}, default "mixed"
        Pooling on the way down; "max" and "avg" are the ablations.
    mixed_inference, mixed_granularity : str
        ``inference`` and ``granularity`` of `MixedPooling2D` (ignored for
        other poolings).
    normalization : {"none", "instance", "batch"}, default "none"
        Normalization between each convolution and its ReLU. The paper's U-Net
        has none. "instance" (as nnU-Net) lets the narrow networks of the
        ``smoke`` and ``default`` profiles converge within their few hundred
        steps; "batch" does too in training, but its moving statistics lag
        behind on such short runs and spoil inference.
    output_prior : float, default 0.5
        The foreground probability the untrained network predicts everywhere:
        the output bias starts at ``log(p / (1 - p))`` (the prior-probability
        initialization of Lin et al. 2017's focal-loss paper). 0.5 is Keras'
        zero bias, as in the paper. For rare foreground a small prior spares the
        first steps from unlearning a 50 % guess everywhere; on short budgets
        some seeds otherwise never get past it.
    name : str, optional
        Model name; default ``"<pooling>_unet"``.

    Returns
    -------
    keras.Model
        Maps (N, rows, columns, channels) to (N, rows, columns, 1) in [0, 1].

    Notes
    -----
    Weights, dropout and mixed-pooling draws are seeded from Keras' global
    seed: call ``keras.utils.set_random_seed(seed)`` before building for a
    reproducible model.
    """
    check_choice("pooling", pooling, POOLINGS)
    check_choice("normalization", normalization, NORMALIZATIONS)
    check_choice("mixed_inference", mixed_inference, INFERENCE_RULES)
    check_choice("mixed_granularity", mixed_granularity, GRANULARITIES)
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    if isinstance(base_filters, bool) or not isinstance(base_filters, (int, np.integer)) or base_filters < 1:
        raise ValueError(f"base_filters must be a positive integer, got {base_filters!r}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
    if not 0.0 < float(output_prior) < 1.0:
        raise ValueError(f"output_prior must lie in (0, 1), got {output_prior!r}")
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(
            f"input_shape must be (rows, columns, channels), got {input_shape!r}"
        )
    factor = 2**depth
    rows, columns, _ = input_shape
    if any(size is None or size <= 0 or size % factor for size in (rows, columns)):
        raise ValueError(
            f"input rows and columns must be positive multiples of 2**depth = {factor} "
            f"so that every pooling halves them exactly, got {input_shape!r}"
        )

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    skips = []
    for level in range(1, depth + 1):
        prefix = f"encoder{level}"
        x = _conv_block(x, base_filters * 2 ** (level - 1), prefix, normalization)
        if level == depth and dropout > 0:
            x = keras.layers.Dropout(dropout, name=f"{prefix}_dropout")(x)
        skips.append(x)
        x = _pooling_layer(pooling, mixed_inference, mixed_granularity, f"{prefix}_pool")(x)

    x = _conv_block(x, base_filters * 2**depth, "bottom", normalization)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="bottom_dropout")(x)

    for level in range(depth, 0, -1):
        prefix = f"decoder{level}"
        filters = base_filters * 2 ** (level - 1)
        x = keras.layers.UpSampling2D(2, name=f"{prefix}_upsample")(x)
        x = _conv(x, filters, 2, f"{prefix}_upconv", normalization)
        x = keras.layers.Concatenate(axis=-1, name=f"{prefix}_concat")([skips[level - 1], x])
        x = _conv_block(x, filters, prefix, normalization)

    bias = float(np.log(float(output_prior) / (1.0 - float(output_prior))))
    outputs = keras.layers.Conv2D(
        1, 1, activation="sigmoid", dtype="float32", name="output",
        bias_initializer=keras.initializers.Constant(bias),
    )(x)
    return keras.Model(inputs, outputs, name=name or f"{pooling}_unet")


# -- loss, metric, compile, load -----------------------------------------------
