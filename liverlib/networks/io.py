"""Compile, load and recast the networks: Adam and the loss, ``.keras`` files, bfloat16 inference copies."""

from __future__ import annotations

import keras

from liverlib.cpu import has_bf16_units

from liverlib.networks.losses import (
    LOSSES,
    bce_batch_dice_loss,
    bce_dice_loss,
    dice_coefficient,
)
from liverlib.networks.pooling import MixedPooling2D, check_choice

PRECISIONS = ("float32", "bfloat16")


def compile_model(
    model: keras.Model,
    loss: str = "bce",
    learning_rate: float = 1e-5,
    jit_compile: bool | str = "auto",
    ema_momentum: float = 0.0,
) -> keras.Model:
    """Compile ``model`` with Adam (the paper's optimizer) and the Dice metric.

    Parameters
    ----------
    model : keras.Model
    loss : {"bce", "bce_dice", "bce_batch_dice"}, default "bce"
        "bce" is the paper's pixel-wise cross-entropy; "bce_dice" adds the soft
        Dice loss per slice (`bce_dice_loss`), which converges faster on small
        budgets; "bce_batch_dice" adds one soft Dice over the whole batch
        (`bce_batch_dice_loss`), which small lesions need.
    learning_rate : float, default 1e-5
        The paper's Adam learning rate.
    jit_compile : bool or "auto"
        Passed to ``model.compile``.
    ema_momentum : float, default 0.0
        0 keeps the last weights (the paper). Otherwise Adam also keeps an
        exponential moving average of the weights with this momentum, and
        ``fit`` ends by writing the average into the model (Keras'
        ``use_ema``): the weights of a short, high-learning-rate run jump from
        step to step, and their average is a steadier network.

    Returns
    -------
    keras.Model
        The same model, compiled.
    """
    check_choice("loss", loss, LOSSES)
    if not float(learning_rate) > 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
    loss_fn = {"bce": keras.losses.BinaryCrossentropy(name="bce"), "bce_dice": bce_dice_loss,
               "bce_batch_dice": bce_batch_dice_loss}[loss]
    if not 0.0 <= float(ema_momentum) < 1.0:
        raise ValueError(f"ema_momentum must lie in [0, 1), got {ema_momentum!r}")
    ema = {"use_ema": True, "ema_momentum": float(ema_momentum)} if ema_momentum else {}
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=float(learning_rate), **ema),
        loss=loss_fn,
        metrics=[dice_coefficient],
        jit_compile=jit_compile,
    )
    return model


def load_model(path, compile: bool = True) -> keras.Model:
    """Load a .keras file written by ``model.save`` (custom objects supplied).

    The custom objects are also registered under the ``liverlib`` package, so
    plain ``keras.saving.load_model`` works too once this module is imported.
    """
    custom_objects = {
        "MixedPooling2D": MixedPooling2D,
        "bce_dice_loss": bce_dice_loss,
        "bce_batch_dice_loss": bce_batch_dice_loss,
        "dice_coefficient": dice_coefficient,
    }
    return keras.saving.load_model(str(path), custom_objects=custom_objects, compile=compile)


def inference_copy(model: keras.Model, precision: str = "float32") -> keras.Model:
    """The model, or a copy with the same weights that computes in another precision.

    Parameters
    ----------
    model : keras.Model
    precision : {"float32", "bfloat16"}
        "bfloat16" computes every layer but the output under Keras'
        ``mixed_bfloat16`` policy (bfloat16 activations and matmuls, float32
        weights) and keeps the sigmoid output in float32. On CPUs with native
        bfloat16 (AVX512-BF16, AMX) and on GPUs this roughly halves the
        network's time; elsewhere it can be slower (docs/experiments.md, Benchmarks).
        Run tables stay in float32, so that they do not depend on the machine.
        Under TensorFlow a CPU without bfloat16 units is refused (ValueError).

    Returns
    -------
    keras.Model
        ``model`` itself for "float32".
    """
    check_choice("precision", precision, PRECISIONS)
    if precision == "float32":
        return model
    if keras.backend.backend() == "tensorflow" and not has_bf16_units():
        # oneDNN has no bfloat16 convolution without these units: TensorFlow fails at the first batch.
        raise ValueError(
            "precision bfloat16 needs a CPU with bfloat16 units (avx512_bf16, amx_bf16 or avx_ne_convert) "
            "under TensorFlow, and this one has none (or ONEDNN_MAX_CPU_ISA hides them): use float32"
        )

    def recreate(layer):
        config = layer.get_config()
        if layer.name != "output":  # the probabilities stay float32
            config["dtype"] = "mixed_bfloat16"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=recreate)
    copy.set_weights(model.get_weights())
    return copy
