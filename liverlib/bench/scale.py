"""``liverlib bench --scale``: LiTS-sized volumes, seconds per case and peak memory of each step.

What is measured
----------------
Four phantoms with LiTS's geometry (:func:`liverlib.data.phantoms.make_phantom`,
``geometry=(planes, spacing)``), 512 x 512 pixels each: the largest LiTS
volume, 987 planes 0.7 mm apart, and three others (:data:`SCALE_CASES`).
Each step runs in a fresh Python process on the largest case alone ("1
case") and on all four ("4 cases"), as a run does it:

``cache``
    :func:`liverlib.data.cache.build_cache` with the ``default`` profile's
    ``preprocess`` section and workers.
``predict``
    :func:`liverlib.inference.crossval.predict_case` with the packaged model
    pair (``liverlib/pretrained``, trained networks of the default width):
    reading, both networks, the labels before and after the 3D CRF, writing
    both files. Real networks, so the CRF runs on the liver they find.
``evaluate``
    :func:`liverlib.evaluation.folders.score_pair` (``liverlib evaluate``) of
    the after-CRF prediction against the reference: the LiTS metrics,
    surface distances included.

Peak RSS is the largest sum of the RSS of the step's process and its
children, sampled every 10 ms (:func:`liverlib.bench.cache.sample_peak_rss`).
Streaming holds when the 4-case peak is that of the largest case, not four
times it (the cache build keeps at most ``workers`` volumes in flight, so its
bound is ``workers`` times the largest). Seconds per plane over the four
cases, times LiTS's 58,638 planes, extrapolate the full data set on this
machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from liverlib.bench.cache import child_env, sample_peak_rss
from liverlib.bench.sizes import Log, significant, stderr_log
from liverlib.cpu import cpu_info

__all__ = ["SCALE_CASES", "LITS_PLANES_TOTAL", "bench_scale", "run_scale_benchmark"]

#: (planes, spacing mm) of the four cases; the first is LiTS's largest volume.
SCALE_CASES = ((987, 0.7), (74, 5.0), (220, 2.5), (450, 1.0))
#: Planes in LiTS's 131 training volumes (Bilic et al. 2023).
LITS_PLANES_TOTAL = 58638
STEPS = ("cache", "predict", "evaluate")


def write_scale_cases(folder: Path, cases=SCALE_CASES, log: Log = stderr_log) -> list[dict]:
    """The LiTS-sized phantoms as ``volume-N.nii.gz`` / ``segmentation-N.nii.gz``; seconds per case."""
    from liverlib.data.phantoms import make_phantom, write_case

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for case_id, geometry in enumerate(cases):
        start = time.perf_counter()
        phantom = make_phantom(case_id, size=512, geometry=geometry)
        write_case(phantom, folder)
        rows.append({"case": case_id, "shape": list(phantom.image.shape), "spacing_mm": [round(s, 3) for s in phantom.spacing],
                     "seconds": time.perf_counter() - start})
        log(f"scale: phantom {case_id}: {'x'.join(map(str, phantom.image.shape))} in {rows[-1]['seconds']:.1f} s")
        del phantom
    return rows


def _step(step: str, data_dir: str, work_dir: str) -> dict:
    """One step on every case of ``data_dir``, in this process; seconds per case (run by :func:`_run_step`)."""
    from liverlib.config import resolve
    from liverlib.data import discover

    cases = discover(data_dir)
    work = Path(work_dir)
    if step == "cache":
        from liverlib.data.cache import build_cache

        cfg = resolve("default")
        start = time.perf_counter()
        cache = build_cache(cases, work / "cache", cfg["preprocess"], workers=cfg["preprocess"]["workers"], progress=False)
        total = time.perf_counter() - start
        planes = cache.stats()["planes"]
        return {"seconds": total, "planes": int(planes.sum()), "workers": int(cfg["preprocess"]["workers"])}
    if step == "predict":
        from liverlib.inference.crossval import predict_case
        from liverlib.inference.models import load_models, run_precision
        from liverlib.runfolder import load_run, packaged_model_dir

        cfg = load_run(packaged_model_dir())
        models = load_models(packaged_model_dir(), 0, run_precision(cfg))
        rows = []
        for files in cases:
            start = time.perf_counter()
            row = predict_case(files, models, cfg, work / "run", fold=0)
            row["seconds"] = time.perf_counter() - start
            rows.append(row)
        return {"cases": rows}
    if step == "evaluate":
        from liverlib.evaluation.folders import score_pair
        from liverlib.runfolder import RunFolder

        run = RunFolder(work / "run")
        seconds: dict[int, float] = {}
        for files in cases:
            start = time.perf_counter()
            score_pair(files.case_id, run.prediction(files.case_id, 1), files.label)
            seconds[files.case_id] = time.perf_counter() - start
        return {"seconds_per_case": seconds}
    raise ValueError(f"step must be one of {STEPS}, got {step!r}")


def _run_step(step: str, data_dir: Path, work_dir: Path) -> dict:
    """:func:`_step` in a fresh Python process; its figures plus ``peak_rss_mb`` and ``wall_s``."""
    env = child_env()
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = [sys.executable, "-m", "liverlib.bench.scale", step, str(data_dir), str(work_dir)]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = sample_peak_rss(proc)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"scale benchmark step {step!r} failed:\n{err.strip()[-2000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(peak_rss_mb=peak / 2**20, wall_s=time.perf_counter() - start)
    return result


def _link(source: Path, dest: Path, case_ids) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for k in case_ids:
        for stem in ("volume", "segmentation"):
            os.link(source / f"{stem}-{k}.nii.gz", dest / f"{stem}-{k}.nii.gz")


def bench_scale(work_dir: Path, cases=SCALE_CASES, log: Log = stderr_log) -> dict[str, Any]:
    """Every step on the largest case alone and on all cases; see the module docstring."""
    started = time.perf_counter()
    source = work_dir / "phantoms"
    phantoms = write_scale_cases(source, cases, log)
    result: dict[str, Any] = {"phantoms": phantoms}
    for name, ids in (("one_case", [0]), ("four_cases", list(range(len(cases))))):
        data_dir = work_dir / name / "data"
        _link(source, data_dir, ids)
        steps = {}
        for step in STEPS:
            steps[step] = _run_step(step, data_dir, work_dir / name)
            log(f"scale: {name}: {step}: {steps[step]['wall_s']:.1f} s, peak RSS {steps[step]['peak_rss_mb']:.0f} MB")
        result[name] = steps
    four = result["four_cases"]
    n_planes = sum(row["shape"][0] for row in phantoms)
    per_plane = {
        "cache": four["cache"]["seconds"] / n_planes,
        "predict": sum(r["seconds"] for r in four["predict"]["cases"]) / n_planes,
        "evaluate": sum(four["evaluate"]["seconds_per_case"].values()) / n_planes,
    }
    result["peak_rss_mb"] = {step: {"one_case": result["one_case"][step]["peak_rss_mb"],
                                    "four_cases": four[step]["peak_rss_mb"]} for step in STEPS}
    result["seconds_per_plane"] = per_plane
    result["lits_extrapolated_h"] = {step: per_plane[step] * LITS_PLANES_TOTAL / 3600 for step in STEPS}
    result["seconds"] = time.perf_counter() - started
    return result


def run_scale_benchmark(out: str | Path | None = None, log: Log = stderr_log) -> int:
    """``liverlib bench --scale``: write the scale figures as one JSON object (stdout or ``out``)."""
    from liverlib.atomic import write_json

    with tempfile.TemporaryDirectory(prefix="liverlib-scale-") as tmp:
        result = {"cpu": cpu_info(), **bench_scale(Path(tmp), log=log)}
    rounded = json.loads(json.dumps(result), parse_float=significant)
    if out is None:
        print(json.dumps(rounded, indent=2), flush=True)
    else:
        write_json(out, rounded)
        log(f"wrote {out}")
    return 0


if __name__ == "__main__":  # one step in a fresh process: python -m liverlib.bench.scale STEP DATA WORK
    print(json.dumps(_step(*sys.argv[1:4])), flush=True)
