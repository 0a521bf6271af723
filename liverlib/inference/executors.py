"""Executors: fold trainings, per-case predictions and scorings in this process or as Dask tasks.

The run's ``executor`` section chooses (``profiles.yaml``):

* ``kind: local`` (the default) runs everything in the calling process, as the
  functions always have; Dask is not needed.
* ``kind: dask`` submits each fold training, each case's prediction and each
  case's scoring as a task to a Dask ``distributed`` cluster: a
  ``LocalCluster`` of ``workers`` processes started here when ``address`` is
  empty, or the running cluster at ``address`` (``tcp://scheduler:8786``), for
  example one started on SLURM or PBS with ``dask-jobqueue``.

The run folder stays the single source of truth. A task reads the run's
``config.yaml`` and ``splits.json`` and writes its models or predictions into
the folder under temporary names that are renamed when complete, so a worker
lost mid-task leaves nothing half-written; Dask reruns the task elsewhere and a
rerun of the whole step skips what is complete. On a cluster the run folder
and the cache (``LIVERLIB_CACHE``) must lie on a filesystem that every worker
sees at the same path. Training tasks ask for ``training_gpus`` units of a
``GPU`` resource, so that workers started with ``--resources GPU=1`` train one
fold at a time each. Dask reruns a task that raised, up to ``retries`` times,
except for bad input (a ``LiverlibError``): rerunning cannot mend a file, so
that error reaches the caller at once, as with the local executor.
"""

from __future__ import annotations

import logging
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from liverlib.errors import ConfigError, LiverlibError

__all__ = ["KINDS", "dask_client", "executor_settings", "results", "submit", "uses_dask"]

KINDS = ("local", "dask")
CONNECT_TIMEOUT = "30s"  # how long to wait for the scheduler at executor.address
_DEFAULTS = {"kind": "local", "address": "", "workers": 2, "training_gpus": 0, "retries": 2}


def executor_settings(cfg: dict) -> dict[str, Any]:
    """The run's ``executor`` section, validated (runs made before the section: local)."""
    settings = {**_DEFAULTS, **(cfg.get("executor") or {})}
    if settings["kind"] not in KINDS:
        raise ConfigError(f"executor.kind must be one of {', '.join(KINDS)}, got {settings['kind']!r}")
    if int(settings["workers"]) < 1:
        raise ConfigError(f"executor.workers must be at least 1, got {settings['workers']!r}")
    return settings


def uses_dask(cfg: dict) -> bool:
    """True when the run's tasks go to a Dask cluster."""
    return executor_settings(cfg)["kind"] == "dask"


def _distributed():
    try:
        import distributed
    except ImportError:
        raise LiverlibError(
            "executor.kind is 'dask' but Dask is not installed; pip install 'liverlib[cluster]' "
            "(or set executor.kind=local)"
        ) from None
    return distributed


@contextmanager
def dask_client(cfg: dict) -> Iterator["distributed.Client"]:  # noqa: F821
    """A ``distributed.Client`` for the run: to ``executor.address``, or to a new ``LocalCluster``.

    The LocalCluster has ``executor.workers`` worker processes of one thread
    each (each task uses the cores through its own libraries) and, when
    ``executor.training_gpus`` is set, that many ``GPU`` units per worker. It is
    closed on exit; a cluster at an address is only disconnected from.
    """
    settings = executor_settings(cfg)
    distributed = _distributed()
    if settings["address"]:
        try:
            client = distributed.Client(settings["address"], timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            raise LiverlibError(
                f"cannot reach the Dask scheduler at {settings['address']} ({exc}); start it, "
                "or set executor.address='' to start a LocalCluster on this machine"
            ) from None
        with client:
            yield client
        return
    gpus = int(settings["training_gpus"])
    cluster = distributed.LocalCluster(
        n_workers=int(settings["workers"]), threads_per_worker=1, processes=True,
        dashboard_address=None, silence_logs=logging.ERROR,
        resources={"GPU": gpus} if gpus else None,
    )
    with cluster, distributed.Client(cluster) as client:
        yield client


class _BadInput:
    """A task's ``LiverlibError``, returned rather than raised so that Dask does not rerun the task."""

    def __init__(self, error: LiverlibError):
        self.error = error


def _run_task(function: Callable, *args):
    """``function(*args)``, its ``LiverlibError`` returned as :class:`_BadInput`; one given as an argument is passed on."""
    failed = next((arg for arg in args if isinstance(arg, _BadInput)), None)
    if failed is not None:  # a task this one depends on had bad input
        return failed
    try:
        return function(*args)
    except LiverlibError as exc:
        return _BadInput(exc)


def submit(client, function: Callable, *args, name: str, cfg: dict, training: bool = False):
    """Submit ``function(*args)`` as the task ``name``, with the run's retries (and GPU need, for training).

    ``name`` says what the task does (``"train-liver-fold-3"``); a random
    suffix keeps two runs on one cluster apart. Arguments may be other
    tasks' futures. A ``LiverlibError`` is not retried: :func:`results`
    raises it.
    """
    settings = executor_settings(cfg)
    gpus = int(settings["training_gpus"]) if training else 0
    return client.submit(_run_task, function, *args, key=f"{name}-{uuid.uuid4().hex[:8]}", pure=False, retries=int(settings["retries"]),
                         resources={"GPU": gpus} if gpus else None)


def results(futures: Iterable) -> Iterator[Any]:
    """Each future's result as it completes; a task that failed for good raises here, in one line."""
    distributed = _distributed()
    for future in distributed.as_completed(list(futures)):
        try:
            result = future.result()
        except distributed.KilledWorker as exc:
            raise LiverlibError(
                f"Dask task {future.key} lost its worker too often ({exc}); the run folder keeps what is "
                "complete, so run the step again once the workers are stable"
            ) from None
        if isinstance(result, _BadInput):
            raise result.error
        yield result
