"""How much work each benchmark does (:class:`BenchSizes`), and the helpers the benchmarks share."""

from __future__ import annotations

import dataclasses
import sys
from typing import Callable

import numpy as np

__all__ = ["BenchSizes", "FULL", "QUICK", "Log"]

#: Receives one progress line (the default writes it to stderr).
Log = Callable[[str], None]


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


def stderr_log(message: str) -> None:
    """The default :data:`Log`: ``bench: message`` on stderr, flushed."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def median(values) -> float:
    """The median of ``values`` as a plain float."""
    return float(np.median(np.asarray(values, dtype=np.float64)))


def significant(value: float, digits: int = 4) -> float:
    """Round to ``digits`` significant digits (plain float, for JSON)."""
    value = float(value)
    if value == 0 or not np.isfinite(value):
        return value
    return float(f"{value:.{digits}g}")
