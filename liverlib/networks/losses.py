"""Losses and the Dice metric of the Mixed-UNet, in ``keras.ops`` only (any backend)."""

from __future__ import annotations

import keras
from keras import ops

LOSSES = ("bce", "bce_dice", "bce_batch_dice")


def _sample_sum(x):
    """Sum over every axis but the batch axis."""
    return ops.sum(x, axis=tuple(range(1, len(x.shape))))


def _bce_plus_soft_dice(y_true, y_pred, over_batch: bool, smooth: float = 1.0):
    """Per-sample mean BCE plus ``1 - soft Dice``, the Dice per sample or over the whole batch."""
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(y_true, y_pred.dtype)
    bce = keras.losses.binary_crossentropy(y_true, y_pred)  # (N, rows, columns)
    bce = ops.mean(bce, axis=tuple(range(1, len(bce.shape))))
    total = ops.sum if over_batch else _sample_sum
    dice = (2.0 * total(y_true * y_pred) + smooth) / (total(y_true) + total(y_pred) + smooth)
    return bce + 1.0 - dice


@keras.saving.register_keras_serializable(package="liverlib")
def bce_dice_loss(y_true, y_pred):
    """Binary cross-entropy plus soft Dice loss, per sample.

    ``mean_pixels(BCE) + 1 - soft_dice`` with
    ``soft_dice = (2 * sum(t * p) + 1) / (sum(t) + sum(p) + 1)`` per slice. The
    smoothing term 1 makes a slice without foreground score a Dice near 1 when
    the prediction is near 0, so empty slices do not dominate the loss.

    Returns
    -------
    tensor, shape (N,)
        Keras averages it over the batch (and applies sample weights).
    """
    return _bce_plus_soft_dice(y_true, y_pred, over_batch=False)


@keras.saving.register_keras_serializable(package="liverlib")
def bce_batch_dice_loss(y_true, y_pred):
    """Binary cross-entropy per sample plus one soft Dice loss over the whole batch.

    The "batch Dice" of nnU-Net: ``sum(t * p)``, ``sum(t)`` and ``sum(p)`` run
    over every pixel of every slice of the batch, so a batch scores as one big
    image. Small structures gain most: a lesion of a few pixels no longer makes
    its slice's Dice all-or-nothing, and lesion-free slices no longer each ask
    for an empty prediction with the weight of a whole slice. The Dice term is
    the same for every sample, so Keras' batch mean gives ``mean(BCE) + 1 -
    batch_dice``.

    Returns
    -------
    tensor, shape (N,)
    """
    return _bce_plus_soft_dice(y_true, y_pred, over_batch=True)


@keras.saving.register_keras_serializable(package="liverlib")
def dice_coefficient(y_true, y_pred):
    """Dice of the prediction thresholded at 0.5, per sample (a training metric).

    A slice where both the reference and the prediction are empty scores 1, as
    in the LiTS convention.
    """
    y_true = ops.cast(ops.greater(y_true, 0.5), "float32")
    y_pred = ops.cast(ops.greater_equal(y_pred, 0.5), "float32")
    intersection = _sample_sum(y_true * y_pred)
    total = _sample_sum(y_true) + _sample_sum(y_pred)
    epsilon = 1e-6
    return (2.0 * intersection + epsilon) / (total + epsilon)
