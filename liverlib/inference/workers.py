"""Label workers: the CRF of one case runs in a background process while the networks predict the next.

The dense CRF (pydensecrf) is single-threaded and holds the GIL, and in
cross-validated prediction it costs several times the two networks. With
``workers > 0``, :class:`LabelWorkers` hands each case's labelling (CRF,
postprocessing, writing) to a pool of that many processes (``spawn``: they
import neither Keras nor the backend), so on 2 cores the CRFs of two cases run
side by side while the main process runs the networks. Results are the same
as in-process: the CRF is deterministic and its inputs are the same arrays.

At most ``workers`` cases wait or run in the pool, so memory grows with
``workers``, not with the number of cases: each case in flight holds its image
and two probability volumes (3 x 4 bytes per voxel) plus the CRF's ~175
bytes per voxel of its box. ``workers=0`` runs every job in the calling
process, in order.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Callable

__all__ = ["LabelWorkers"]


class LabelWorkers:
    """A bounded pool of processes for per-case labelling; a context manager.

    Parameters
    ----------
    workers : int
        Processes; 0 runs each job at once in this process.

    Examples
    --------
    >>> with LabelWorkers(0) as pool:
    ...     pool.submit(pow, 2, 10, done=print)
    1024
    """

    def __init__(self, workers: int = 0):
        workers = int(workers)
        if workers < 0:
            raise ValueError(f"workers must be >= 0 (0 runs in this process), got {workers}")
        self.workers = workers
        self._pool = None
        self._pending: deque[tuple[Future, Callable[[Any], None] | None]] = deque()

    def __enter__(self) -> LabelWorkers:
        if self.workers:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self

    def submit(self, fn: Callable, *args, done: Callable[[Any], None] | None = None) -> None:
        """Run ``fn(*args)``; ``done(result)`` is called in this process, in submission order.

        Blocks while ``workers`` jobs are already in flight. An exception in a
        job is raised here, or at the latest by :meth:`drain`.
        """
        if self._pool is None:
            result = fn(*args)
            if done is not None:
                done(result)
            return
        while len(self._pending) >= self.workers:
            self._finish_oldest()
        self._pending.append((self._pool.submit(fn, *args), done))

    def _finish_oldest(self) -> None:
        future, done = self._pending.popleft()
        result = future.result()
        if done is not None:
            done(result)

    def drain(self) -> None:
        """Wait for every job submitted so far and run their ``done`` callbacks."""
        while self._pending:
            self._finish_oldest()

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.drain()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
