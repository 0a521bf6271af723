"""Slice-cache benchmarks: build speed vs bare NIfTI reading, and peak memory on N vs 4N cases.

What is timed
-------------
``preprocess_slices_per_s``, ``nifti_read_slices_per_s``
    Planes per second of :func:`liverlib.data.cache.build_cache` from scratch
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
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from liverlib.bench.sizes import FULL, BenchSizes, Log, median, stderr_log
from liverlib.data import discover
from liverlib.data.cache import build_cache
from liverlib.data.phantoms import make_phantom, write_case

__all__ = ["write_phantoms", "bench_cache_speed", "peak_build_rss_mb", "bench_cache_memory", "child_env", "sample_peak_rss"]


def write_phantoms(folder: Path, sizes: BenchSizes) -> None:
    """The benchmark's phantom cases, rendered in this process.

    Not :func:`liverlib.data.phantoms.write_cohort` with workers: its spawned workers
    re-import the caller's main module, which breaks a script without a
    ``__main__`` guard; a few cases take seconds anyway.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for case_id in range(sizes.cache_cases):
        write_case(make_phantom(case_id, size=sizes.cache_size, n_slices=sizes.cache_slices), folder)


def _link_copies(source: Path, dest: Path, copies: int) -> None:
    """``copies`` times every case of ``source`` under new case numbers (hard links)."""
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


def bench_cache_speed(data_dir: Path, work_dir: Path, cfg: dict, sizes: BenchSizes = FULL, log: Log = stderr_log):
    """Planes/s of a slice-cache build from scratch vs bare nibabel reading.

    Returns
    -------
    (dict, SliceCache)
        The figures (``preprocess_slices_per_s``, ``nifti_read_slices_per_s``,
        ``paired``: the median of the per-round ratios, ``details``) and the
        last cache built (for :func:`liverlib.bench.training.bench_pipeline`).
    """
    import nibabel as nib

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
        "preprocess_slices_per_s": planes / median(build_s),
        "nifti_read_slices_per_s": planes / median(read_s),
        "paired": {"preprocess_vs_nifti_read": median([a / b for a, b in zip(read_s, build_s)])},
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
from liverlib.data.cache import build_cache
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


def child_env() -> dict[str, str]:
    """This process's environment, with this liverlib first on ``PYTHONPATH``: for a benchmark's fresh process."""
    import liverlib

    env = dict(os.environ)
    package_root = str(Path(liverlib.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


def sample_peak_rss(proc: subprocess.Popen) -> int:
    """Largest RSS (bytes) of ``proc`` and its children, sampled every 10 ms until it exits (psutil)."""
    import psutil

    return _sample_peak(proc, psutil)


def _sample_peak(proc: subprocess.Popen, psutil) -> int:
    """Largest RSS (bytes) of ``proc`` and its children, sampled every 10 ms until it exits."""
    sampled = 0
    handle = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            sampled = max(sampled, _tree_rss(handle))
        except psutil.NoSuchProcess:
            break
        time.sleep(0.01)
    return sampled


def peak_build_rss_mb(data_dir: Path, cache_dir: Path, preprocess_cfg: dict, workers: int) -> dict[str, Any]:
    """Peak RSS (MB) of a slice-cache build run in a fresh Python process.

    The sum over the process and its workers, sampled every 10 ms with psutil
    (pages shared by a forked worker and its parent count in both); without
    psutil, the process's own peak plus ``workers`` times its largest child's
    (an upper bound).
    """
    env = child_env()
    command = [sys.executable, "-c", _BUILD_SCRIPT, str(data_dir), str(cache_dir), json.dumps(preprocess_cfg), str(workers)]
    try:
        import psutil
    except ImportError:
        psutil = None
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    sampled = _sample_peak(proc, psutil) if psutil is not None else 0
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


def bench_cache_memory(data_dir: Path, work_dir: Path, cfg: dict, sizes: BenchSizes = FULL, log: Log = stderr_log) -> dict:
    """Peak RSS of cache builds on N and on 4N cases (each in a fresh process)."""
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
