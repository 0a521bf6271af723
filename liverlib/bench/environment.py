"""Where a benchmark ran: the CPU and its usable cores, any GPU, the Keras backend and library versions."""

from __future__ import annotations

import platform
from typing import Any

import numpy as np

from liverlib.cpu import cpu_info

__all__ = ["environment"]


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
