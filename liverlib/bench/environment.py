"""Where a benchmark ran: the CPU and its usable cores, any GPU, the Keras backend and library versions."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["environment", "cpu_info", "ISA_FLAGS"]

#: The instruction-set flags that decide the speed of training, inference and the CRF here.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")  # fmt: skip


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_info() -> dict[str, Any]:
    """The CPU: ``model``, ``isa`` (the :data:`ISA_FLAGS` it has, as ``lscpu`` names them), usable ``cores``.

    ``onednn_max_cpu_isa`` is the ``ONEDNN_MAX_CPU_ISA`` cap on oneDNN's kernels
    (TensorFlow's convolutions) when one is set, e.g. ``AVX2`` to measure a
    plain AVX2 machine on a newer one; None otherwise.
    """
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "model": _cpu_name(),
        "isa": [flag for flag in ISA_FLAGS if flag in flags],
        "cores": cores,
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
    }


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
    """``device``, ``cpu``, ``backend`` and ``versions`` of this process.

    ``device`` names the CPU (and its usable cores) and any GPU the Keras
    backend sees; ``cpu`` is :func:`cpu_info`; ``versions`` holds Python's and the installed versions of
    numpy, keras, the backend library, nibabel and pydensecrf (None if absent).
    Imports keras: call it after anything that forks worker processes.
    """
    import keras

    backend = keras.backend.backend()
    cpu = cpu_info()
    device = f"{cpu['model']} ({cpu['cores']} cores; {', '.join(cpu['isa']) or 'no AVX'})"
    gpus = _gpu_names(backend)
    if gpus:
        device += "; GPU: " + ", ".join(gpus)
    backend_dists = {"tensorflow": ("tensorflow", "tensorflow-cpu")}.get(backend, (backend,))
    return {
        "device": device,
        "cpu": cpu,
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
