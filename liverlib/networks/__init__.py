"""The networks: mixed pooling, the Mixed-UNet, its losses, and how models are compiled and loaded.

Importing this package imports Keras; ``import liverlib`` does not.
"""

from liverlib.networks.io import PRECISIONS, compile_model, inference_copy, load_model
from liverlib.networks.losses import (
    LOSSES,
    bce_batch_dice_loss,
    bce_dice_loss,
    dice_coefficient,
)
from liverlib.networks.pooling import GRANULARITIES, INFERENCE_RULES, MixedPooling2D
from liverlib.networks.unet import NORMALIZATIONS, POOLINGS, mixed_unet

__all__ = [
    "GRANULARITIES",
    "INFERENCE_RULES",
    "LOSSES",
    "NORMALIZATIONS",
    "POOLINGS",
    "PRECISIONS",
    "MixedPooling2D",
    "bce_batch_dice_loss",
    "bce_dice_loss",
    "compile_model",
    "dice_coefficient",
    "inference_copy",
    "load_model",
    "mixed_unet",
]
