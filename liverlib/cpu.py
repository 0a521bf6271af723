"""The CPU this process runs on: model, instruction-set flags, usable cores, and whether it has bfloat16 units."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any, Iterable

__all__ = ["ISA_FLAGS", "cpu_info", "has_bf16_units"]

#: The instruction-set flags that decide the speed of training, inference and the CRF here.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "avx_vnni", "avx_ne_convert", "amx_tile", "amx_bf16", "amx_int8")  # fmt: skip

#: The flags of CPU units that compute in bfloat16 (lscpu's names).
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "avx_ne_convert")

#: ``ONEDNN_MAX_CPU_ISA`` values that leave oneDNN without bfloat16 kernels.
_CAPS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI")


def _cpuinfo(*keys: str) -> str | None:
    """The value of the first ``/proc/cpuinfo`` line starting with one of ``keys`` (None if none or unreadable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(keys):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _flags() -> set[str]:
    return set((_cpuinfo("flags", "Features") or "").split())


def _cpu_name() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_info() -> dict[str, Any]:
    """The CPU: ``model``, ``isa`` (the :data:`ISA_FLAGS` it has, as ``lscpu`` names them), usable ``cores``.

    ``onednn_max_cpu_isa`` is the ``ONEDNN_MAX_CPU_ISA`` cap on oneDNN's kernels
    (TensorFlow's convolutions) when one is set, e.g. ``AVX2`` to measure a
    plain AVX2 machine on a newer one; None otherwise.
    """
    flags = _flags()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "model": _cpu_name(),
        "isa": [flag for flag in ISA_FLAGS if flag in flags],
        "cores": cores,
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
    }


def has_bf16_units(flags: Iterable[str] | None = None, onednn_cap: str | None = None) -> bool:
    """True when the CPU computes bfloat16 natively and oneDNN may use it.

    Parameters
    ----------
    flags : iterable of str, optional
        The CPU's flags; default this CPU's (``/proc/cpuinfo``).
    onednn_cap : str, optional
        ``ONEDNN_MAX_CPU_ISA``; default the environment's. A cap below
        ``AVX512_CORE_BF16`` leaves TensorFlow's convolutions without bfloat16 kernels.

    Examples
    --------
    >>> has_bf16_units({"avx2", "fma"}), has_bf16_units({"avx512f", "avx512_bf16"})
    (False, True)
    >>> has_bf16_units({"avx512f", "avx512_bf16"}, onednn_cap="AVX2")
    False
    """
    flags = _flags() if flags is None else set(flags)
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "") if onednn_cap is None else onednn_cap
    return bool(flags & set(BF16_FLAGS)) and cap.upper() not in _CAPS_WITHOUT_BF16
