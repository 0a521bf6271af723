"""Speed and memory benchmarks: ``liverlib bench [--out FILE.json]``.

Every figure is measured in one process and one run, so that the ratios the
targets are stated in (mixed vs max pooling, real vs in-memory training,
achieved vs peak FLOP/s, preprocessing vs reading) hold on a noisy, shared
machine: the two sides of each ratio are measured alternately, in rounds, and
the ratio a target is checked on is the median over the rounds of the ratio
within each round (the two sides of a round ran back to back under the same
load, so slow changes in the machine's load cancel). The figures themselves
are medians over the rounds. Speed is never asserted in the tests; this
command is where it is measured.

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
    (under 1 % here), so the figure slightly understates the work.
    ``train_gflops_per_s`` = median mixed-pooling slices/s x FLOPs per slice.
    The peak is the best of several float32 ``keras.ops.matmul`` of two
    ``n x n`` matrices (``2 n^3`` FLOPs), run within the same training rounds.
``pipeline_ratio``
    Per-epoch slices/s of ``model.fit`` on the training input of
    :mod:`liverlib.train` (a :class:`liverlib.dataset.SliceDataset` over a
    real slice cache built from phantoms, augmentation on, prefetch threads,
    ``steps_per_epoch`` of the default profile), divided by that of
    ``model.fit`` on in-memory arrays of the same shape (no augmentation), the
    same compiled model, one-epoch fit calls alternating; the median over
    rounds of the within-round ratio.
``predict_s_per_volume``, ``predict_breakdown_s``
    :func:`liverlib.inference.predict_volume` with the CRF, on
    ``make_phantom(0, size=512, n_slices=200)``, with two untrained networks
    of the ``paper`` profile's width (``base_filters`` 64) and its
    ``preprocess``, ``predict`` and ``crf`` sections, after a one-batch
    warm-up of each network. Untrained networks find no liver, which would
    skip stage 2 and the CRF, so their outputs are replaced after they are
    computed: the networks run on every plane (stage 1) and on the ROI of
    every plane with liver (stage 2) exactly as in a real prediction, and
    their timings count, but what :func:`liver_probability` and
    :func:`lesion_probability` return is the phantom's own liver and lesion
    label taken through the same resolution (resized to the network grid and
    back), i.e. what a perfect network would give. Everything after that
    (largest component, the stage-2 ROI, both CRFs) runs on it unchanged.
    The breakdown: ``stage1`` and ``stage2`` (each: preprocessing, network,
    resampling back to the image grid), of which ``network`` and
    ``resample`` are parts, ``largest_component``, ``crf`` (both CRFs,
    :func:`liverlib.crf.refine_labels`), ``other`` (the rest of the total),
    and ``warmup`` (not in the total).
``predict_s_per_volume_bfloat16``, ``predict_breakdown_s_bfloat16``
    The same with the networks in bfloat16 (``liverlib predict --precision
    bfloat16``, :func:`liverlib.model.inference_copy`).
``preprocess_slices_per_s``, ``nifti_read_slices_per_s``
    Planes per second of :func:`liverlib.cache.build_cache` from scratch
    (the ``default`` profile's ``preprocess`` section and workers) on N
    phantom cases written as LiTS ``.nii.gz``, and of reading the same
    volume and segmentation files with bare nibabel
    (``np.asanyarray(nib.load(path).dataobj)``) in one process. Both read
    warm files (page cache); rounds alternate; medians. For the record, each
    round also builds the cache in one process (``details``), which shows what
    the workers gain on the machine at that moment.
``peak_rss_mb_small``, ``peak_rss_mb_large``
    Peak resident memory of a cache build from scratch on N and on 4N cases,
    each in a fresh Python process: the sum of the RSS of that process and
    its worker processes, sampled every 10 ms (psutil); without psutil, the
    process's own peak plus ``workers`` times its largest child's. The 4N
    cases are the N files linked under new case numbers, so the largest
    volume is the same in both and only the number of cases differs.
``device``, ``backend``, ``versions``, ``targets``, ``seconds``, ``details``
    Where it ran, each issue-7 target with its value and pass/fail, the
    total wall time, and the settings and raw per-round figures.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = [
    "BenchSizes",
    "FULL",
    "QUICK",
    "run_benchmarks",
    "measure",
    "bench_training",
    "bench_pipeline",
    "bench_predict",
    "bench_cache_speed",
    "bench_cache_memory",
    "conv_flops",
    "environment",
    "evaluate_targets",
]

Log = Callable[[str], None]

#: The issue-7 targets: name -> rule on the value (see :func:`evaluate_targets`).
TARGETS = {
    "mixed_vs_max": ">= 0.9",
    "pipeline_ratio": ">= 0.9",
    "train_vs_peak_flops": ">= 0.5",
    "preprocess_vs_nifti_read": ">= 0.5",
    "rss_large_vs_small": "<= 1.2",
    "predict_s_per_volume": "<= 30",
    "predict_s_per_volume_bfloat16": "<= 30",  # the same, with `--precision bfloat16`
}


@dataclasses.dataclass(frozen=True)
class BenchSizes:
    """How much work each benchmark does. :data:`FULL` is ``liverlib bench``.

    ``None`` for ``base_filters``, ``batch_size`` and ``predict_base_filters``
    means the profile's value (``default``, ``default``, ``paper``).
    """

    base_filters: int | None = None
    batch_size: int | None = None
    train_warmup: int = 3          # training steps per model before timing
    train_rounds: int = 15         # alternating measurements of mixed and max
    train_steps: int = 3           # training steps per measurement
    matmul_size: int = 2048
    matmul_repeats: int = 2        # matmuls per training round (best of all is the peak)
    pipeline_steps: int | None = None  # steps per epoch; None: the default profile's
    pipeline_rounds: int = 5       # alternating one-epoch fit calls of each kind
    predict_size: int = 512
    predict_slices: int = 200
    predict_base_filters: int | None = None
    cache_cases: int = 4           # N; the memory benchmark also builds 4N
    cache_size: int = 256          # in-plane voxels of the phantom cases
    cache_slices: int | None = None  # planes per phantom; None: drawn (40-150)
    cache_rounds: int = 3          # alternating (read, build) measurements


FULL = BenchSizes()

#: Tiny sizes that run every code path in seconds (tests); the figures mean nothing.
QUICK = BenchSizes(
    base_filters=2,
    batch_size=4,
    train_warmup=1,
    train_rounds=2,
    train_steps=1,
    matmul_size=64,
    matmul_repeats=1,
    pipeline_steps=2,
    pipeline_rounds=1,
    predict_size=64,
    predict_slices=16,
    predict_base_filters=2,
    cache_cases=2,
    cache_size=64,
    cache_slices=12,
    cache_rounds=1,
)


def _stderr(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _median(values) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64)))


def _round(value: float, digits: int = 4) -> float:
    """Round to ``digits`` significant digits (plain float, for JSON)."""
    value = float(value)
    if value == 0 or not np.isfinite(value):
        return value
    return float(f"{value:.{digits}g}")


# --------------------------------------------------------------------------- environment


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_names(backend: str) -> list[str]:
    """Names of the accelerators the Keras backend sees (empty on CPU)."""
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            return [
                tf.config.experimental.get_device_details(d).get("device_name", d.name)
                for d in tf.config.list_physical_devices("GPU")
            ]
        if backend == "jax":
            import jax

            return [d.device_kind for d in jax.devices() if d.platform != "cpu"]
        if backend == "torch":
            import torch

            if torch.cuda.is_available():
                return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # a broken driver must not stop the benchmark; the CPU is still named
        return []
    return []


def _version(*distributions: str) -> str | None:
    from importlib import metadata

    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def environment() -> dict[str, Any]:
    """``device``, ``backend`` and ``versions`` of this process.

    ``device`` names the CPU (and its usable cores) and any GPU the Keras
    backend sees; ``versions`` holds Python's and the installed versions of
    numpy, keras, the backend library, nibabel and pydensecrf (None if absent).
    """
    import keras

    backend = keras.backend.backend()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    device = f"{_cpu_name()} ({cores} cores)"
    gpus = _gpu_names(backend)
    if gpus:
        device += "; GPU: " + ", ".join(gpus)
    backend_dists = {"tensorflow": ("tensorflow", "tensorflow-cpu")}.get(backend, (backend,))
    return {
        "device": device,
        "backend": backend,
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "keras": keras.__version__,
            backend: _version(*backend_dists),
            "nibabel": _version("nibabel"),
            "pydensecrf": _version("pydensecrf2", "pydensecrf"),
        },
    }


# --------------------------------------------------------------------------- FLOPs


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


# --------------------------------------------------------------------------- training


def bench_training(cfg: dict, sizes: BenchSizes = FULL, log: Log = _stderr) -> dict[str, Any]:
    """Training-step throughput, mixed vs max pooling, and achieved vs peak FLOP/s.

    Parameters
    ----------
    cfg : dict
        A resolved config (the ``default`` profile): model, loss, learning rate,
        batch size and input size come from it.
    sizes : BenchSizes

    Returns
    -------
    dict
        ``train_slices_per_s_mixed``, ``train_slices_per_s_max``,
        ``train_gflops_per_s``, ``peak_gflops_per_s``, ``paired`` (the
        medians of the per-round ratios mixed/max and achieved/peak FLOP/s)
        and ``details``.
    """
    import keras

    from liverlib.config import apply_overrides
    from liverlib.train import build_model, set_seed

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
    forward = conv_flops(models["mixed"])
    mixed, maximum = _median(rates["mixed"]), _median(rates["max"])
    per_round_peak = [max(matmul[r * sizes.matmul_repeats : (r + 1) * sizes.matmul_repeats]) for r in range(sizes.train_rounds)]
    return {
        "train_slices_per_s_mixed": mixed,
        "train_slices_per_s_max": maximum,
        "train_gflops_per_s": mixed * 3 * forward / 1e9,
        "peak_gflops_per_s": max(matmul),
        "paired": {
            "mixed_vs_max": _median([a / b for a, b in zip(rates["mixed"], rates["max"])]),
            "train_vs_peak_flops": _median([a * 3 * forward / 1e9 / p for a, p in zip(rates["mixed"], per_round_peak)]),
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


def bench_pipeline(cfg: dict, cache, sizes: BenchSizes = FULL, log: Log = _stderr) -> dict[str, Any]:
    """Slices/s of training from the slice cache vs from in-memory arrays.

    The dataset is the one :func:`liverlib.train.train_stage` fits on (stage 1,
    every case of ``cache``, augmentation, prefetch threads); the in-memory
    arrays hold as many un-augmented slices of the cache as one epoch uses.

    Returns
    -------
    dict
        ``pipeline_ratio`` (median over rounds of the ratio of the two
        kinds' slices/s within the round) and ``details`` (with the medians
        of both slices/s).
    """
    from liverlib.config import apply_overrides
    from liverlib.train import _dataset, build_model, set_seed

    steps = int(sizes.pipeline_steps or cfg["train"]["steps_per_epoch"] or 30)
    cfg = apply_overrides(cfg, {"train.steps_per_epoch": steps})
    batch = int(cfg["train"]["batch_size"])
    set_seed(cfg["seed"])
    model = build_model(cfg)
    dataset = _dataset(cache, cache.case_ids, "liver", cfg, cfg["seed"], training=True)
    x, y = cache.load(cache.case_ids, 1)
    take = np.resize(np.arange(len(x)), steps * batch)  # as many slices as one epoch, repeated if needed
    x_mem = x[take].astype(np.float32)[..., None] * np.float32(1.0 / (int(cache.config["levels"]) - 1))
    y_mem = y[take].astype(np.float32)[..., None]
    seconds: dict[str, list[float]] = {"pipeline": [], "memory": []}

    def fit(kind: str, epochs: int, callbacks=()):
        if kind == "pipeline":
            model.fit(dataset, epochs=epochs, verbose=0, shuffle=False, callbacks=list(callbacks))
        else:
            model.fit(x_mem, y_mem, batch_size=batch, epochs=epochs, verbose=0, shuffle=False,
                      callbacks=list(callbacks))  # fmt: skip

    fit("memory", 1)  # warm-up: builds the train function
    fit("pipeline", 1)
    for r in range(sizes.pipeline_rounds):
        order = ("pipeline", "memory") if r % 2 == 0 else ("memory", "pipeline")
        for kind in order:
            fit(kind, 1, [_epoch_timer(seconds[kind])])
        log(f"pipeline round {r + 1}/{sizes.pipeline_rounds}: cache+augmentation "
            f"{steps * batch / seconds['pipeline'][-1]:.1f}, in memory "
            f"{steps * batch / seconds['memory'][-1]:.1f} slices/s")
    per_epoch = steps * batch
    pipeline = per_epoch / _median(seconds["pipeline"])
    memory = per_epoch / _median(seconds["memory"])
    # Each round's two fit calls ran back to back: the ratio of their epoch times cancels slow drifts in load.
    rounds = [m / p for m, p in zip(seconds["memory"], seconds["pipeline"])]
    return {
        "pipeline_ratio": _median(rounds),
        "details": {
            "slices_per_s_pipeline": pipeline,
            "slices_per_s_memory": memory,
            "ratio_per_round": rounds,
            "steps_per_epoch": steps,
            "batch_size": batch,
            "cache_slices": int(len(x)),
            "prefetch_workers": int(dataset.workers),
            "epoch_s_pipeline": seconds["pipeline"],
            "epoch_s_memory": seconds["memory"],
        },
    }


# --------------------------------------------------------------------------- prediction


@contextlib.contextmanager
def _patched(replacements: list[tuple[object, str, Callable]]):
    """Set module attributes for the duration of the block, then restore them."""
    saved = [(module, name, getattr(module, name)) for module, name, _ in replacements]
    try:
        for module, name, make in replacements:
            setattr(module, name, make(getattr(module, name)))
        yield
    finally:
        for module, name, original in reversed(saved):
            setattr(module, name, original)


def _timed(timings: dict[str, float], key: str, result: Callable | None = None):
    """A wrapper factory: time calls into ``timings[key]``; optionally replace the result."""

    def make(original):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                value = original(*args, **kwargs)
            finally:
                timings[key] += time.perf_counter() - start
            return value if result is None else result(value)

        return wrapper

    return make


def _perfect_probabilities(phantom, cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """What perfect networks would give: the labels taken through the network grids.

    Liver: the liver mask (labels 1 and 2) resized to the stage-1 grid and back
    to the image (linear both ways, as stage 1's output is). Lesion: the lesion
    mask cropped to the liver ROI, resized to the stage-2 grid and back, pasted.
    """
    from liverlib import preprocess

    size = int(cfg["preprocess"]["size"])
    shape = phantom.image.shape[1:]
    liver = (phantom.label > 0).astype(np.float32)
    liver_prob = preprocess.resize_back(preprocess.resize_slices(liver, size), shape)
    np.clip(liver_prob, 0.0, 1.0, out=liver_prob)
    lesion_prob = np.zeros(phantom.image.shape, np.float32)
    if liver.any():
        roi = preprocess.liver_roi(liver, phantom.spacing, cfg["preprocess"]["roi_margin_mm"])
        lesion = preprocess.crop((phantom.label == 2).astype(np.float32), roi)
        small = preprocess.resize_slices(lesion, size)
        lesion_prob = preprocess.paste(preprocess.resize_back(small, (roi.height, roi.width)), roi)
        np.clip(lesion_prob, 0.0, 1.0, out=lesion_prob)
    return liver_prob.astype(np.float32, copy=False), lesion_prob.astype(np.float32, copy=False)


def bench_predict(cfg: dict, sizes: BenchSizes = FULL, log: Log = _stderr, precision: str = "float32") -> dict[str, Any]:
    """Seconds of :func:`liverlib.inference.predict_volume` (CRF on) on a phantom volume.

    See the module docstring for exactly what is timed and why the networks'
    outputs are replaced by the phantom's labels after they are computed.

    Parameters
    ----------
    cfg : dict
        The ``paper`` profile (network width, preprocessing, predict and CRF sections).
    precision : {"float32", "bfloat16"}
        Network precision (:func:`liverlib.model.inference_copy`).

    Returns
    -------
    dict
        ``predict_s_per_volume``, ``predict_breakdown_s`` and ``details``.
    """
    from liverlib import crf, inference, preprocess
    from liverlib.model import inference_copy, mixed_unet
    from liverlib.phantoms import make_phantom
    from liverlib.train import set_seed

    start = time.perf_counter()
    phantom = make_phantom(0, size=sizes.predict_size, n_slices=sizes.predict_slices)
    liver_prob, lesion_prob = _perfect_probabilities(phantom, cfg)
    log(f"predict: phantom {'x'.join(map(str, phantom.image.shape))} ready in {time.perf_counter() - start:.1f} s")

    set_seed(cfg["seed"])
    size = int(cfg["preprocess"]["size"])
    m = cfg["model"]
    width = int(sizes.predict_base_filters or m["base_filters"])
    models = [
        tuple(
            inference_copy(mixed_unet((size, size, 1), **{**m, "base_filters": width}, name=stage), precision)
            for stage in ("liver", "lesion")
        )
    ]  # fmt: skip
    batch = int(cfg["predict"]["batch_size"])
    start = time.perf_counter()
    warm = np.zeros((batch, size, size, 1), np.float32)
    for model in models[0]:
        model.predict_on_batch(warm)
    warmup = time.perf_counter() - start

    threshold = float(cfg["predict"]["threshold"])
    stage2_planes = int((liver_prob >= threshold).reshape(liver_prob.shape[0], -1).any(axis=1).sum())
    liver_out, lesion_out = liver_prob.copy(), lesion_prob.copy()  # predict_volume may edit them in place
    timings = dict.fromkeys(("stage1", "stage2", "network", "resample", "largest_component", "crf"), 0.0)
    replacements = [
        (inference, "liver_probability", _timed(timings, "stage1", lambda _: liver_out)),
        (inference, "lesion_probability", _timed(timings, "stage2", lambda _: lesion_out)),
        (inference, "predict_slices", _timed(timings, "network")),
        (preprocess, "resize_back", _timed(timings, "resample")),
        (inference, "largest_component", _timed(timings, "largest_component")),
        (crf, "refine_labels", _timed(timings, "crf")),
    ]
    image = phantom.image.astype(np.float32, copy=False)
    with _patched(replacements):
        start = time.perf_counter()
        labels = inference.predict_volume(image, phantom.spacing, models, cfg, use_crf=True,
                                          log=lambda line: log(f"predict: {line}"))  # fmt: skip
        total = time.perf_counter() - start
    breakdown = {**timings, "other": total - sum(timings[k] for k in ("stage1", "stage2", "largest_component", "crf"))}
    breakdown["warmup"] = warmup
    voxel_ml = float(np.prod(phantom.spacing)) / 1000.0
    return {
        "predict_s_per_volume": total,
        "predict_breakdown_s": breakdown,
        "details": {
            "shape": [int(s) for s in image.shape],
            "spacing_mm": [float(s) for s in phantom.spacing],
            "base_filters": width,
            "precision": precision,
            "batch_size": batch,
            "liver_ml_reference": float((phantom.label > 0).sum() * voxel_ml),
            "liver_ml_predicted": float((labels > 0).sum() * voxel_ml),
            "lesion_ml_reference": float((phantom.label == 2).sum() * voxel_ml),
            "lesion_ml_predicted": float((labels == 2).sum() * voxel_ml),
            "stage2_planes": stage2_planes,
        },
    }


# --------------------------------------------------------------------------- slice cache


def _write_phantoms(folder: Path, sizes: BenchSizes) -> None:
    """The benchmark's phantom cases, rendered in this process.

    Not :func:`liverlib.phantoms.write_cohort` with workers: its spawned workers
    re-import the caller's main module, which breaks a script without a
    ``__main__`` guard; a few cases take seconds anyway.
    """
    from liverlib.phantoms import make_phantom, write_case

    folder.mkdir(parents=True, exist_ok=True)
    for case_id in range(sizes.cache_cases):
        write_case(make_phantom(case_id, size=sizes.cache_size, n_slices=sizes.cache_slices), folder)


def _link_copies(source: Path, dest: Path, copies: int) -> None:
    """``copies`` times every case of ``source`` under new case numbers (hard links)."""
    from liverlib.data import discover

    cases = discover(source)
    dest.mkdir(parents=True, exist_ok=True)
    for k in range(copies):
        for files in cases:
            new_id = k * len(cases) + files.case_id
            for path, stem in ((files.image, "volume"), (files.label, "segmentation")):
                target = dest / f"{stem}-{new_id}.nii.gz"
                try:
                    os.link(path, target)
                except OSError:  # another file system: a copy reads the same
                    import shutil

                    shutil.copyfile(path, target)


def bench_cache_speed(data_dir: Path, work_dir: Path, cfg: dict, sizes: BenchSizes = FULL, log: Log = _stderr):
    """Planes/s of a slice-cache build from scratch vs bare nibabel reading.

    Returns
    -------
    (dict, SliceCache)
        The figures (``preprocess_slices_per_s``, ``nifti_read_slices_per_s``,
        ``paired``: the median of the per-round ratios, ``details``) and the
        last cache built (for :func:`bench_pipeline`).
    """
    import nibabel as nib

    from liverlib.cache import build_cache
    from liverlib.data import discover

    cases = discover(data_dir)
    workers = int(cfg["preprocess"]["workers"])
    paths = [p for c in cases for p in (c.image, c.label)]
    build_s, serial_s, read_s, cache, planes = [], [], [], None, 0
    for r in range(sizes.cache_rounds):
        start = time.perf_counter()
        for path in paths:
            np.asanyarray(nib.load(str(path)).dataobj)
        read_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        cache = build_cache(cases, work_dir / f"cache-{r}", cfg["preprocess"], workers=workers, progress=False)
        build_s.append(time.perf_counter() - start)
        # One process, for the record: how much the workers gain on this machine right now.
        start = time.perf_counter()
        build_cache(cases, work_dir / f"cache-serial-{r}", cfg["preprocess"], workers=0, progress=False)
        serial_s.append(time.perf_counter() - start)
        planes = int(cache.stats()["planes"].sum())
        log(f"slice cache round {r + 1}/{sizes.cache_rounds}: {planes} planes, build {build_s[-1]:.2f} s "
            f"({workers} workers; {serial_s[-1]:.2f} s in one process), nibabel read {read_s[-1]:.2f} s")
    return {
        "preprocess_slices_per_s": planes / _median(build_s),
        "nifti_read_slices_per_s": planes / _median(read_s),
        "paired": {"preprocess_vs_nifti_read": _median([a / b for a, b in zip(read_s, build_s)])},
        "details": {
            "cases": len(cases),
            "planes": planes,
            "in_plane": sizes.cache_size,
            "workers": workers,
            "build_s": build_s,
            "build_s_one_process": serial_s,
            "read_s": read_s,
        },
    }, cache


# The build process's own peak is VmHWM where /proc exists: on Linux ru_maxrss(RUSAGE_SELF)
# carries over the peak of the process image before exec, i.e. of the (large) benchmark process.
_BUILD_SCRIPT = """
import json, resource, sys
from liverlib.cache import build_cache
from liverlib.data import discover
build_cache(discover(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), workers=int(sys.argv[4]), progress=False)
usage = {w: resource.getrusage(getattr(resource, w)).ru_maxrss for w in ("RUSAGE_SELF", "RUSAGE_CHILDREN")}
try:
    with open("/proc/self/status") as f:
        usage["RUSAGE_SELF"] = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    pass
print(json.dumps(usage))
"""


def _tree_rss(process) -> int:
    import psutil

    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def peak_build_rss_mb(data_dir: Path, cache_dir: Path, preprocess_cfg: dict, workers: int) -> dict[str, Any]:
    """Peak RSS (MB) of a slice-cache build run in a fresh Python process.

    The sum over the process and its workers, sampled every 10 ms with psutil
    (pages shared by a forked worker and its parent count in both); without
    psutil, the process's own peak plus ``workers`` times its largest child's
    (an upper bound).
    """
    import liverlib

    env = dict(os.environ)
    package_root = str(Path(liverlib.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-c", _BUILD_SCRIPT, str(data_dir), str(cache_dir), json.dumps(preprocess_cfg), str(workers)]
    try:
        import psutil
    except ImportError:
        psutil = None
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    sampled = 0
    if psutil is not None:
        handle = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                sampled = max(sampled, _tree_rss(handle))
            except psutil.NoSuchProcess:
                break
            time.sleep(0.01)
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"the cache build for the memory benchmark failed:\n{err.strip()}")
    usage = json.loads(out.strip().splitlines()[-1])
    kb = 1024 if sys.platform != "darwin" else 1  # ru_maxrss: KiB on Linux, bytes on macOS
    self_mb = usage["RUSAGE_SELF"] * kb / 2**20
    child_mb = usage["RUSAGE_CHILDREN"] * kb / 2**20
    bound = self_mb + max(int(workers), 1) * child_mb if int(workers) > 1 else max(self_mb, child_mb)
    return {
        "peak_rss_mb": sampled / 2**20 if sampled else bound,
        "method": "psutil tree sampling" if sampled else "ru_maxrss bound",
        "sampled_mb": sampled / 2**20,
        "maxrss_self_mb": self_mb,
        "maxrss_largest_child_mb": child_mb,
        "seconds": seconds,
    }


def bench_cache_memory(data_dir: Path, work_dir: Path, cfg: dict, sizes: BenchSizes = FULL, log: Log = _stderr) -> dict:
    """Peak RSS of cache builds on N and on 4N cases (each in a fresh process)."""
    from liverlib.data import discover

    workers = int(cfg["preprocess"]["workers"])
    large_dir = work_dir / "large"
    _link_copies(data_dir, large_dir, 4)
    results = {}
    for name, folder in (("small", data_dir), ("large", large_dir)):
        results[name] = peak_build_rss_mb(folder, work_dir / f"rss-cache-{name}", cfg["preprocess"], workers)
        results[name]["cases"] = len(discover(folder))
        log(f"memory: cache build on {results[name]['cases']} cases, peak {results[name]['peak_rss_mb']:.0f} MB "
            f"({results[name]['method']}), {results[name]['seconds']:.1f} s")
    return {
        "peak_rss_mb_small": results["small"]["peak_rss_mb"],
        "peak_rss_mb_large": results["large"]["peak_rss_mb"],
        "details": {"workers": workers, **results},
    }


# --------------------------------------------------------------------------- targets and the run


def evaluate_targets(result: dict[str, Any], paired: dict[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """Each issue-7 target: its value, the rule and pass/fail (None if not measured).

    Parameters
    ----------
    result : dict
        The benchmark's figures (the top-level keys of the JSON).
    paired : dict, optional
        Ratios measured pairwise (the median over rounds of the ratio within
        each round), used instead of the ratio of the two medians: a round's
        two sides ran back to back under the same load, so the machine's noise
        cancels in their ratio.
    """

    def ratio(a: str, b: str) -> float | None:
        if result.get(a) is None or not result.get(b):
            return None
        return result[a] / result[b]

    values = {
        "mixed_vs_max": ratio("train_slices_per_s_mixed", "train_slices_per_s_max"),
        "pipeline_ratio": result.get("pipeline_ratio"),
        "train_vs_peak_flops": ratio("train_gflops_per_s", "peak_gflops_per_s"),
        "preprocess_vs_nifti_read": ratio("preprocess_slices_per_s", "nifti_read_slices_per_s"),
        "rss_large_vs_small": ratio("peak_rss_mb_large", "peak_rss_mb_small"),
        "predict_s_per_volume": result.get("predict_s_per_volume"),
        "predict_s_per_volume_bfloat16": result.get("predict_s_per_volume_bfloat16"),
    }
    values.update({k: v for k, v in (paired or {}).items() if v is not None})
    out = {}
    for name, rule in TARGETS.items():
        value = values[name]
        op, threshold = rule.split()
        passed = None if value is None else (value >= float(threshold) if op == ">=" else value <= float(threshold))
        out[name] = {"value": None if value is None else _round(value), "target": rule, "pass": passed}
    return out


def _rounded(obj):
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_rounded(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return _round(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def measure(sizes: BenchSizes = FULL, log: Log = _stderr) -> dict[str, Any]:
    """Run every benchmark; return the result object (see the module docstring)."""
    from liverlib.config import apply_overrides, resolve

    started = time.perf_counter()
    default = resolve("default")
    overrides = {k: v for k, v in (("model.base_filters", sizes.base_filters), ("train.batch_size", sizes.batch_size)) if v}
    default = apply_overrides(default, overrides)
    paper = resolve("paper")
    result: dict[str, Any] = {}
    details: dict[str, Any] = {}
    paired: dict[str, float] = {}
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="liverlib-bench-") as tmp:
        tmp = Path(tmp)
        data_dir = tmp / "phantoms"
        log(f"writing {sizes.cache_cases} phantom cases ({sizes.cache_size} px) to {data_dir}")
        _write_phantoms(data_dir, sizes)

        speed, cache = bench_cache_speed(data_dir, tmp, default, sizes, log)
        details["preprocess"] = speed.pop("details")
        paired.update(speed.pop("paired"))
        result.update(speed)
        memory = bench_cache_memory(data_dir, tmp, default, sizes, log)
        details["memory"] = memory.pop("details")
        result.update(memory)

        env = environment()  # imports keras: after the cache builds, which fork workers
        log(f"{env['backend']} backend on {env['device']}")
        training = bench_training(default, sizes, log)
        details["training"] = training.pop("details")
        paired.update(training.pop("paired"))
        result.update(training)
        pipeline = bench_pipeline(default, cache, sizes, log)
        details["pipeline"] = pipeline.pop("details")
        result.update(pipeline)
        paired["pipeline_ratio"] = result["pipeline_ratio"]

    predict = bench_predict(paper, sizes, log)
    details["predict"] = predict.pop("details")
    result.update(predict)
    fast = bench_predict(paper, sizes, log, precision="bfloat16")
    details["predict_bfloat16"] = fast.pop("details")
    result["predict_s_per_volume_bfloat16"] = fast["predict_s_per_volume"]
    result["predict_breakdown_s_bfloat16"] = fast["predict_breakdown_s"]

    ordered = {
        key: result[key]
        for key in (
            "train_slices_per_s_mixed", "train_slices_per_s_max", "pipeline_ratio",
            "train_gflops_per_s", "peak_gflops_per_s", "predict_s_per_volume", "predict_breakdown_s",
            "predict_s_per_volume_bfloat16", "predict_breakdown_s_bfloat16",
            "preprocess_slices_per_s", "nifti_read_slices_per_s", "peak_rss_mb_small", "peak_rss_mb_large",
        )
    }  # fmt: skip
    ordered.update(env)
    ordered["targets"] = evaluate_targets(result, paired)
    ordered["seconds"] = time.perf_counter() - started
    load = {"load_average_before": load_before, "load_average_after": os.getloadavg() if load_before else None}
    ordered["details"] = {"sizes": dataclasses.asdict(sizes), **load, **details}
    return _rounded(ordered)


def run_benchmarks(out: str | Path | None = None, quick: bool = False, sizes: BenchSizes | None = None) -> int:
    """``liverlib bench``: run every benchmark and write one JSON object.

    Parameters
    ----------
    out : str or Path, optional
        JSON file, written atomically; default stdout. Progress goes to stderr.
    quick : bool
        Tiny sizes (:data:`QUICK`): every code path in seconds, meaningless figures.
    sizes : BenchSizes, optional
        Explicit sizes (overrides ``quick``).

    Returns
    -------
    int
        0 (the exit status; a missed target is a result, not an error).
    """
    from liverlib.atomic import write_json

    sizes = sizes or (QUICK if quick else FULL)
    result = measure(sizes)
    if out is None:
        print(json.dumps(result, indent=2), flush=True)
    else:
        write_json(out, result)
        _stderr(f"wrote {out}")
    failed = [name for name, t in result["targets"].items() if t["pass"] is False]
    _stderr(f"{len(result['targets']) - len(failed)}/{len(result['targets'])} targets met"
            + (f"; missed: {', '.join(failed)}" if failed else "") + f"; {result['seconds']:.0f} s")
    return 0
