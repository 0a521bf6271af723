"""Executors: the smoke pipeline as Dask tasks gives the local executor's tables, even when a worker dies."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from liverlib.config import resolve
from liverlib.data import splits
from liverlib.data.sources import dataset_cases
from liverlib.errors import ConfigError, DataError, LiverlibError
from liverlib.evaluation.run import score_run
from liverlib.inference import executors
from liverlib.inference.crossval import predict_cases
from liverlib.runfolder import RunFolder, init_run
from liverlib.training.folds import run_stage

distributed = pytest.importorskip("distributed")

FOLDS = [0, 1]  # two of the smoke profile's five folds, a few training steps: the same code, in a minute
# The CRF off: on networks this untrained it labels whole volumes for a minute; tests/test_crf.py has it.
CAPPED = ["train.epochs=1", "train.steps_per_epoch=8", "predict.min_lesion_ml=[0.0, 0.5]", "crf.enabled=false"]


def test_executor_settings_are_checked():
    assert executors.executor_settings({})["kind"] == "local"  # runs made before the section
    assert executors.uses_dask(resolve("smoke", ["executor.kind=dask"]))
    with pytest.raises(ConfigError, match="executor.kind must be one of local, dask"):
        executors.executor_settings(resolve("smoke", ["executor.kind=slurm"]))


def test_tasks_carry_retries_and_training_asks_for_gpus():
    class Recorder:
        def submit(self, function, *args, **kwargs):
            self.args, self.kwargs = args, kwargs

    cfg = resolve("smoke", ["executor.kind=dask", "executor.training_gpus=1", "executor.retries=3"])
    client = Recorder()
    executors.submit(client, print, "run", 3, name="train-liver-fold-3", cfg=cfg, training=True)
    assert client.args == (print, "run", 3) and client.kwargs["resources"] == {"GPU": 1} and client.kwargs["retries"] == 3
    assert client.kwargs["key"].startswith("train-liver-fold-3-") and client.kwargs["pure"] is False
    executors.submit(client, print, name="predict-case-1", cfg=cfg)
    assert client.kwargs["resources"] is None  # only training needs a GPU


def _count_and_raise(counter: str, error: Exception):
    with open(counter, "a") as f:
        f.write("x")
    raise error


def test_bad_input_is_not_retried_but_other_failures_are(tmp_path):
    cfg = resolve("smoke", ["executor.kind=dask", "executor.retries=3"])
    bad, flaky = tmp_path / "bad-calls", tmp_path / "flaky-calls"
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        first = executors.submit(client, _count_and_raise, str(bad), DataError("not a NIfTI file", "case_3.nii.gz"),
                                 name="predict-case-3", cfg=cfg)
        after = executors.submit(client, len, first, name="score-case-3", cfg=cfg)  # depends on the bad one
        with pytest.raises(DataError, match=r"^case_3.nii.gz: not a NIfTI file$"):
            list(executors.results([after]))
        with pytest.raises(RuntimeError, match="worker hiccup"):
            list(executors.results([executors.submit(client, _count_and_raise, str(flaky),
                                                     RuntimeError("worker hiccup"), name="flaky", cfg=cfg)]))
    assert bad.read_text() == "x"  # once: rerunning cannot mend a file
    assert flaky.read_text() == "xxxx"  # once and 3 retries


def test_unreachable_scheduler_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(executors, "CONNECT_TIMEOUT", "2s")
    cfg = resolve("smoke", ["executor.kind=dask", "executor.address=tcp://127.0.0.1:9"])
    with pytest.raises(LiverlibError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        with executors.dask_client(cfg):
            pass


def _smoke_pipeline(run_dir, overrides: list[str]) -> bytes:
    """Notebooks 01 and 04-06 of the smoke profile on FOLDS, through the functions they call."""
    cfg = init_run(run_dir, "smoke", CAPPED + overrides)
    cases = dataset_cases(cfg)
    splits.run_splits([c.case_id for c in cases], cfg["folds"], cfg["seed"], cfg["train"]["validation_fraction"],
                      RunFolder(run_dir).splits)
    for stage in ("liver", "lesion"):
        run_stage(run_dir, stage, FOLDS, verbose=0)
    predict_cases(run_dir, cases, FOLDS, progress=False)
    score_run(run_dir, FOLDS, progress=False)
    return RunFolder(run_dir).metrics.read_bytes()


@pytest.fixture(scope="module")
def local_metrics(tmp_path_factory) -> bytes:
    return _smoke_pipeline(tmp_path_factory.mktemp("local") / "run", [])


@pytest.mark.slow
def test_dask_local_cluster_gives_the_local_tables(local_metrics, tmp_path):
    metrics = _smoke_pipeline(tmp_path / "run", ["executor.kind=dask", "executor.workers=2"])
    assert metrics == local_metrics


class _Killer(threading.Thread):
    """Kills the worker process that runs the first fold training, once, mid-task."""

    def __init__(self, address: str):
        super().__init__(daemon=True)
        self.address, self.killed, self.stop = address, None, threading.Event()

    def run(self) -> None:
        with distributed.Client(self.address, timeout="30s") as client:
            while not self.stop.is_set():
                busy = {w: keys for w, keys in client.processing().items()
                        if any(str(k).startswith("train-") for k in keys)}
                if busy:
                    worker = next(iter(busy))
                    time.sleep(1.0)  # inside the task: importing, building the network or fitting it
                    pid = client.run(os.getpid, workers=[worker])[worker]
                    os.kill(pid, signal.SIGKILL)
                    self.killed = (worker, sorted(map(str, busy[worker])))
                    return
                time.sleep(0.05)


@pytest.mark.slow
def test_a_worker_killed_during_training_changes_nothing(local_metrics, tmp_path):
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        killer = _Killer(cluster.scheduler_address)
        killer.start()
        try:
            metrics = _smoke_pipeline(tmp_path / "run", ["executor.kind=dask", f"executor.address={cluster.scheduler_address}"])
        finally:
            killer.stop.set()
            killer.join(timeout=60)
    assert killer.killed is not None, "no training task was seen running, so no worker was killed"
    assert metrics == local_metrics
