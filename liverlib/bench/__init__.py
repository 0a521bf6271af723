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

What each figure times is described where it is measured:
:mod:`liverlib.bench.training` (training throughput, FLOP/s, the input
pipeline), :mod:`liverlib.bench.predict` (seconds per volume and their
breakdown), :mod:`liverlib.bench.cache` (cache build speed and peak memory).
On a CPU without bfloat16 units under TensorFlow the two bfloat16 figures
are None (:func:`liverlib.cpu.has_bf16_units`). ``crf_s_per_volume`` is the ``crf`` part of the float32 prediction (both
CRFs of :func:`liverlib.inference.labels.refine_labels` on the 512 x 512 x 200
phantom). The rest of the JSON object: ``device``, ``cpu``, ``backend``, ``versions``
(:mod:`liverlib.bench.environment`: where it ran), ``targets`` (each target
of :data:`TARGETS` with its value and pass/fail,
:mod:`liverlib.bench.targets`), ``seconds`` (the total wall time) and
``details`` (the settings and raw per-round figures).

The benchmarks import Keras (and the modules that load it) inside the functions
that use it: the cache benchmarks fork worker processes first, and a forked
TensorFlow can hang.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from liverlib.atomic import write_json
from liverlib.bench.cache import (
    bench_cache_memory,
    bench_cache_speed,
    peak_build_rss_mb,
    write_phantoms,
)
from liverlib.bench.environment import environment
from liverlib.bench.predict import bench_predict
from liverlib.bench.sizes import FULL, QUICK, BenchSizes, Log, significant, stderr_log
from liverlib.bench.targets import TARGETS, evaluate_targets
from liverlib.bench.training import bench_pipeline, bench_training, conv_flops
from liverlib.config import apply_overrides, resolve
from liverlib.cpu import has_bf16_units

__all__ = [
    "BenchSizes",
    "FULL",
    "QUICK",
    "TARGETS",
    "run_benchmarks",
    "measure",
    "bench_training",
    "bench_pipeline",
    "bench_predict",
    "bench_cache_speed",
    "bench_cache_memory",
    "peak_build_rss_mb",
    "conv_flops",
    "environment",
    "evaluate_targets",
]

#: The top-level figures of the JSON object, in their order (then ``device`` ... ``details``).
FIGURES = (
    "train_slices_per_s_mixed", "train_slices_per_s_max", "pipeline_ratio", "epoch_ratio",
    "train_gflops_per_s", "peak_gflops_per_s", "predict_s_per_volume", "predict_breakdown_s", "crf_s_per_volume",
    "predict_s_per_volume_bfloat16", "predict_breakdown_s_bfloat16",
    "preprocess_slices_per_s", "nifti_read_slices_per_s", "peak_rss_mb_small", "peak_rss_mb_large",
)  # fmt: skip


def _rounded(obj):
    """``obj`` with every float rounded to 4 significant digits and numpy integers made ints (for JSON)."""
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_rounded(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return significant(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _take(into: dict[str, Any], details: dict[str, Any], name: str, figures: dict[str, Any], paired: dict | None = None):
    """Move a benchmark's ``details`` to ``details[name]``, its ``paired`` ratios to ``paired``, the rest to ``into``."""
    details[name] = figures.pop("details")
    if paired is not None:
        paired.update(figures.pop("paired"))
    into.update(figures)


def _measure_on_phantoms(default: dict, sizes: BenchSizes, log: Log, result: dict, details: dict, paired: dict) -> dict:
    """The cache, memory, training and pipeline benchmarks on phantom cases in a temporary folder; returns the environment."""
    with tempfile.TemporaryDirectory(prefix="liverlib-bench-") as tmp:
        tmp = Path(tmp)
        data_dir = tmp / "phantoms"
        log(f"writing {sizes.cache_cases} phantom cases ({sizes.cache_size} px) to {data_dir}")
        write_phantoms(data_dir, sizes)

        speed, cache = bench_cache_speed(data_dir, tmp, default, sizes, log)
        _take(result, details, "preprocess", speed, paired)
        _take(result, details, "memory", bench_cache_memory(data_dir, tmp, default, sizes, log))

        env = environment()  # imports keras: after the cache builds, which fork workers
        log(f"{env['backend']} backend on {env['device']}")
        _take(result, details, "training", bench_training(default, sizes, log), paired)
        _take(result, details, "pipeline", bench_pipeline(default, cache, sizes, log))
        paired["pipeline_ratio"] = result["pipeline_ratio"]
        paired["epoch_ratio"] = result["epoch_ratio"]
    return env


def measure(sizes: BenchSizes = FULL, log: Log = stderr_log) -> dict[str, Any]:
    """Run every benchmark; return the result object (see the module docstring)."""
    started = time.perf_counter()
    default = resolve("default")
    overrides = {k: v for k, v in (("model.base_filters", sizes.base_filters), ("train.batch_size", sizes.batch_size)) if v}
    default = apply_overrides(default, overrides)
    paper = resolve("paper")
    result: dict[str, Any] = {}
    details: dict[str, Any] = {}
    paired: dict[str, float] = {}
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    env = _measure_on_phantoms(default, sizes, log, result, details, paired)

    _take(result, details, "predict", bench_predict(paper, sizes, log))
    result["crf_s_per_volume"] = result["predict_breakdown_s"]["crf"]  # both CRFs, float32 run
    if env["backend"] != "tensorflow" or has_bf16_units():
        fast = bench_predict(paper, sizes, log, precision="bfloat16")
        details["predict_bfloat16"] = fast.pop("details")
        result["predict_s_per_volume_bfloat16"] = fast["predict_s_per_volume"]
        result["predict_breakdown_s_bfloat16"] = fast["predict_breakdown_s"]
    else:  # TensorFlow refuses bfloat16 networks here (liverlib.networks.inference_copy)
        log("predict: bfloat16 skipped: this CPU has no bfloat16 units (or ONEDNN_MAX_CPU_ISA hides them)")
        details["predict_bfloat16"] = {"skipped": "no bfloat16 units"}
        result["predict_s_per_volume_bfloat16"] = result["predict_breakdown_s_bfloat16"] = None

    ordered = {key: result[key] for key in FIGURES}
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
    sizes = sizes or (QUICK if quick else FULL)
    result = measure(sizes)
    if out is None:
        print(json.dumps(result, indent=2), flush=True)
    else:
        write_json(out, result)
        stderr_log(f"wrote {out}")
    failed = [name for name, t in result["targets"].items() if t["pass"] is False]
    stderr_log(f"{len(result['targets']) - len(failed)}/{len(result['targets'])} targets met"
               + (f"; missed: {', '.join(failed)}" if failed else "") + f"; {result['seconds']:.0f} s")
    return 0
