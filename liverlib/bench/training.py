"""Training benchmarks: step throughput with mixed vs max pooling, FLOP/s vs the matmul peak, the input pipeline, a real epoch.

What is timed
-------------
``train_slices_per_s_mixed``, ``train_slices_per_s_max``
    ``model.train_on_batch`` on one synthetic batch (random gray levels,
    random mask), the ``default`` profile's model (its ``base_filters``,
    loss, learning rate, 96 x 96 input) and batch size, with mixed and with
    max pooling, after warm-up steps. Rounds alternate the two models (and
    their order), ``steps`` steps each; the medians are reported.
``train_gflops_per_s``, ``peak_gflops_per_s``
    The training FLOPs of a slice are counted analytically from the
    convolutions: ``2 * rows * columns * k * k * c_in * c_out`` per
    convolution in the forward pass (multiply and add), and 3 times that for
    a training step (the backward pass computes a gradient with respect to
    the input and one with respect to the kernel, each about a forward
    pass). Pooling, upsampling, activations and the optimizer are left out
    (small next to the convolutions), so the figure slightly understates the
    work. ``train_gflops_per_s`` = median mixed-pooling slices/s x FLOPs per
    slice. The peak is the best of several float32 ``keras.ops.matmul`` of two
    ``n x n`` matrices (``2 n^3`` FLOPs), run within the same training rounds.
``pipeline_ratio``
    Per-epoch slices/s of ``model.fit`` on the training input of
    :mod:`liverlib.training.folds` (a :class:`liverlib.data.dataset.SliceDataset` over a
    real slice cache built from phantoms, augmentation on, prefetch threads,
    ``steps_per_epoch`` of the default profile), divided by that of
    ``model.fit`` on in-memory arrays of the same shape (no augmentation), the
    same compiled model, one-epoch fit calls alternating; the median over
    rounds of the within-round ratio.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from liverlib.bench.sizes import FULL, BenchSizes, Log, median, stderr_log
from liverlib.config import apply_overrides

__all__ = ["conv_flops", "bench_training", "bench_pipeline"]


def conv_flops(model) -> int:
    """Forward-pass FLOPs of one sample through the model's 2-D convolutions.

    ``2 * rows * columns * k_rows * k_columns * c_in * c_out`` per ``Conv2D``
    (a multiply and an add per weight and output pixel), from the layer's output
    shape and kernel; biases, activations and the other layers are left out.
    A training step costs about 3 times this (see the module docstring).
    """
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            rows, cols = layer.output.shape[1:3]
            k_rows, k_cols, c_in, c_out = layer.kernel.shape
            total += 2 * int(rows) * int(cols) * int(k_rows) * int(k_cols) * int(c_in) * int(c_out)
    return total


def _matmul_gflops(operand, size: int) -> float:
    """GFLOP/s of one float32 ``size x size`` matmul, waiting for the result."""
    from keras import ops

    start = time.perf_counter()
    product = ops.matmul(operand, operand)
    ops.convert_to_numpy(ops.sum(product[:1]))  # forces the (asynchronous) backends to finish
    return 2.0 * size**3 / (time.perf_counter() - start) / 1e9


def _training_rounds(models: dict, x, y, operand, sizes: BenchSizes, log: Log) -> tuple[dict[str, list[float]], list[float]]:
    """Alternating timed rounds: slices/s of each pooling, and matmul GFLOP/s, per round."""
    n, batch = int(sizes.matmul_size), len(x)
    rates: dict[str, list[float]] = {"mixed": [], "max": []}
    matmul: list[float] = []
    for r in range(sizes.train_rounds):
        order = ("mixed", "max") if r % 2 == 0 else ("max", "mixed")  # cancels a drift in load
        for pooling in order:
            start = time.perf_counter()
            for _ in range(sizes.train_steps):
                models[pooling].train_on_batch(x, y)
            rates[pooling].append(sizes.train_steps * batch / (time.perf_counter() - start))
        matmul.extend(_matmul_gflops(operand, n) for _ in range(sizes.matmul_repeats))
        log(f"training round {r + 1}/{sizes.train_rounds}: mixed {rates['mixed'][-1]:.1f}, "
            f"max {rates['max'][-1]:.1f} slices/s; matmul {max(matmul[-sizes.matmul_repeats:]):.1f} GFLOP/s")
    return rates, matmul


def bench_training(cfg: dict, sizes: BenchSizes = FULL, log: Log = stderr_log) -> dict[str, Any]:
    """Training-step throughput, mixed vs max pooling, and achieved vs peak FLOP/s.

    Parameters
    ----------
    cfg : dict
        A resolved config (the ``default`` profile): model, loss, learning rate,
        batch size and input size come from it.
    sizes : BenchSizes
    log : callable
        Receives one progress line per round.

    Returns
    -------
    dict
        ``train_slices_per_s_mixed``, ``train_slices_per_s_max``,
        ``train_gflops_per_s``, ``peak_gflops_per_s``, ``paired`` (the
        medians of the per-round ratios mixed/max and achieved/peak FLOP/s)
        and ``details``.
    """
    import keras

    from liverlib.training.folds import build_model, set_seed

    set_seed(cfg["seed"])  # as training does (TensorFlow: deterministic ops)
    size = int(cfg["preprocess"]["size"])
    batch = int(cfg["train"]["batch_size"])
    rng = np.random.default_rng(0)
    x = rng.random((batch, size, size, 1), dtype=np.float32)
    y = (rng.random((batch, size, size, 1)) < 0.3).astype(np.float32)
    models = {}
    for pooling in ("mixed", "max"):
        models[pooling] = build_model(apply_overrides(cfg, {"model.pooling": pooling}))
        for _ in range(sizes.train_warmup):
            models[pooling].train_on_batch(x, y)
    n = int(sizes.matmul_size)
    operand = keras.ops.convert_to_tensor(rng.random((n, n), dtype=np.float32), dtype="float32")
    _matmul_gflops(operand, n)  # warm-up

    rates, matmul = _training_rounds(models, x, y, operand, sizes, log)
    forward = conv_flops(models["mixed"])
    mixed, maximum = median(rates["mixed"]), median(rates["max"])
    per_round_peak = [max(matmul[r * sizes.matmul_repeats : (r + 1) * sizes.matmul_repeats]) for r in range(sizes.train_rounds)]
    return {
        "train_slices_per_s_mixed": mixed,
        "train_slices_per_s_max": maximum,
        "train_gflops_per_s": mixed * 3 * forward / 1e9,
        "peak_gflops_per_s": max(matmul),
        "paired": {
            "mixed_vs_max": median([a / b for a, b in zip(rates["mixed"], rates["max"])]),
            "train_vs_peak_flops": median([a * 3 * forward / 1e9 / p for a, p in zip(rates["mixed"], per_round_peak)]),
        },
        "details": {
            "base_filters": int(cfg["model"]["base_filters"]),
            "batch_size": batch,
            "input": [size, size, 1],
            "forward_gflop_per_slice": forward / 1e9,
            "train_gflop_per_slice": 3 * forward / 1e9,
            "matmul_size": n,
            "slices_per_s_mixed": rates["mixed"],
            "slices_per_s_max": rates["max"],
            "matmul_gflops_per_s": matmul,
        },
    }


def _epoch_timer(seconds: list[float]):
    """A Keras callback appending the wall time of every epoch to ``seconds``."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self._start)

    return EpochTimer()


def bench_pipeline(cfg: dict, cache, sizes: BenchSizes = FULL, log: Log = stderr_log) -> dict[str, Any]:
    """Slices/s of training from the slice cache vs from in-memory arrays, and of a real epoch vs bare steps.

    The dataset is the one :func:`liverlib.training.folds.train_stage` fits on (stage 1,
    every case of ``cache``, augmentation, prefetch threads); the in-memory
    arrays hold as many un-augmented slices of the cache as one epoch uses.
    The epoch of ``epoch_ratio`` fits on every case but the last and validates
    on the last, as a fold does.

    Returns
    -------
    dict
        ``pipeline_ratio`` and ``epoch_ratio`` (medians over rounds of the
        within-round ratios) and ``details`` (with the medians of the slices/s).
    """
    from liverlib.training.folds import _dataset, build_model, set_seed

    steps = int(sizes.pipeline_steps or cfg["train"]["steps_per_epoch"] or 30)
    cfg = apply_overrides(cfg, {"train.steps_per_epoch": steps})
    batch = int(cfg["train"]["batch_size"])
    set_seed(cfg["seed"])
    model = build_model(cfg)
    dataset = _dataset(cache, cache.case_ids, "liver", cfg, cfg["seed"], training=True)
    fit_ids, val_ids = cache.case_ids[:-1], cache.case_ids[-1:]
    epoch_data = _dataset(cache, fit_ids, "liver", cfg, cfg["seed"], training=True)
    val_data = _dataset(cache, val_ids, "liver", cfg, cfg["seed"], training=False)
    x, y = cache.load(cache.case_ids, 1)
    take = np.resize(np.arange(len(x)), steps * batch)  # as many slices as one epoch, repeated if needed
    x_mem = x[take].astype(np.float32)[..., None] * np.float32(1.0 / (int(cache.config["levels"]) - 1))
    y_mem = y[take].astype(np.float32)[..., None]
    x_step, y_step = dataset[0]
    seconds: dict[str, list[float]] = {"pipeline": [], "memory": [], "epoch": [], "steps": []}

    def fit(kind: str, epochs: int, callbacks=()):
        if kind == "pipeline":
            model.fit(dataset, epochs=epochs, verbose=0, shuffle=False, callbacks=list(callbacks))
        elif kind == "epoch":
            model.fit(epoch_data, validation_data=val_data, epochs=epochs, verbose=0, shuffle=False,
                      callbacks=list(callbacks))  # fmt: skip
        elif kind == "memory":
            model.fit(x_mem, y_mem, batch_size=batch, epochs=epochs, verbose=0, shuffle=False,
                      callbacks=list(callbacks))  # fmt: skip
        else:  # bare steps on one prepared batch
            start = time.perf_counter()
            for _ in range(steps):
                model.train_on_batch(x_step, y_step)
            seconds["steps"].append(time.perf_counter() - start)

    for kind in ("memory", "pipeline", "epoch", "steps"):  # warm-up: builds the train and test functions
        fit(kind, 1)
    seconds["steps"].clear()
    for r in range(sizes.pipeline_rounds):
        order = ("pipeline", "memory", "epoch", "steps") if r % 2 == 0 else ("steps", "epoch", "memory", "pipeline")
        for kind in order:
            fit(kind, 1, [] if kind == "steps" else [_epoch_timer(seconds[kind])])
        log(f"pipeline round {r + 1}/{sizes.pipeline_rounds}: cache+augmentation "
            f"{steps * batch / seconds['pipeline'][-1]:.1f}, in memory "
            f"{steps * batch / seconds['memory'][-1]:.1f}, real epoch {steps * batch / seconds['epoch'][-1]:.1f}, "
            f"bare steps {steps * batch / seconds['steps'][-1]:.1f} slices/s")
    per_epoch = steps * batch
    rate = {kind: per_epoch / median(values) for kind, values in seconds.items()}
    # Each round's fit calls ran back to back: the ratio of their epoch times cancels slow drifts in load.
    rounds = [m / p for m, p in zip(seconds["memory"], seconds["pipeline"])]
    epoch_rounds = [s / e for s, e in zip(seconds["steps"], seconds["epoch"])]
    return {
        "pipeline_ratio": median(rounds),
        "epoch_ratio": median(epoch_rounds),
        "details": {
            "slices_per_s_pipeline": rate["pipeline"],
            "slices_per_s_memory": rate["memory"],
            "slices_per_s_epoch": rate["epoch"],
            "slices_per_s_steps": rate["steps"],
            "ratio_per_round": rounds,
            "epoch_ratio_per_round": epoch_rounds,
            "steps_per_epoch": steps,
            "batch_size": batch,
            "cache_slices": int(len(x)),
            "validation_slices": int(len(val_data.x)),
            "prefetch_workers": int(dataset.workers),
            "epoch_s_pipeline": seconds["pipeline"],
            "epoch_s_memory": seconds["memory"],
            "epoch_s_epoch": seconds["epoch"],
            "epoch_s_steps": seconds["steps"],
        },
    }
