"""Where a benchmark ran: the CPU and its usable cores, any GPU, the Keras backend and library versions."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["environment"]


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
    Imports keras: call it after anything that forks worker processes.
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
