"""The ``paper`` profile on a GPU: one fold of both stages on LiTS-sized phantoms, extrapolated to the 10-fold run.

``python -m liverlib.bench.paper_fold --out paper_fold.json`` (``scripts/gpu_paper_fold.sh`` runs it
under ``KERAS_BACKEND=jax`` on a GPU machine) writes LiTS-geometry phantoms
(:func:`liverlib.data.phantoms.write_cohort`, ``geometry="lits"``), trains fold 0
of the ``paper`` profile (31 M parameters, batch 32, 96 x 96) for a few epochs
with :func:`liverlib.training.folds.run_stage`, exactly as notebooks 04 and 05
do, and reports:

``slices_per_s``
    Training slices per second of each stage over all its epochs: the first
    epoch's compilation and every epoch's validation included, so give it a
    few epochs (the default 3) for a rate close to the steady one.
``fold_s``
    Wall seconds of each stage's fold, the first epoch included.
``lits_epoch_slices``
    Slices one epoch of each stage would see on LiTS: the slice cache's slices
    per plane on these phantoms, times LiTS's 58,638 planes, times the share of
    the scans a fold of the 10-fold paper run fits (0.9 x 0.9).
``paper_run_h``
    10 folds x 2 stages x the profile's 20 epochs at the measured rates, and
    ``one_model_h`` (one stage of one fold), against the paper's 3 h for one
    model on a GTX 960.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from liverlib.bench.scale import LITS_PLANES_TOTAL

PAPER_ONE_MODEL_H = 3.0  # the paper: about 3 h to train one model on a GTX 960


def measure_paper_fold(work: Path, cases: int, epochs: int, steps: int = 0, folds: int = 10, seed: int = 7) -> dict:
    """Train fold 0 of both stages of the paper profile on ``cases`` LiTS-sized phantoms; see the module docstring."""
    from liverlib.config import resolve
    from liverlib.data import splits
    from liverlib.data.phantoms import write_cohort
    from liverlib.data.sources import dataset_cases, open_cache
    from liverlib.runfolder import RunFolder, init_run
    from liverlib.training.folds import run_stage

    started = time.perf_counter()
    data = work / "phantoms"
    write_cohort(data, cases=cases, seed=seed, size=512, workers=os.cpu_count() or 1, geometry="lits")
    phantoms_s = time.perf_counter() - started
    overrides = [f"data.dir={data}", f"train.epochs={epochs}", f"folds={folds}"]
    if steps:
        overrides.append(f"train.steps_per_epoch={steps}")
    run_dir = work / "run"
    cfg = init_run(run_dir, "paper", overrides)
    all_cases = dataset_cases(cfg)
    splits.run_splits([c.case_id for c in all_cases], cfg["folds"], cfg["seed"],
                      cfg["train"]["validation_fraction"], RunFolder(run_dir).splits)
    t0 = time.perf_counter()
    cache = open_cache(cfg, progress=False)
    cache_s = time.perf_counter() - t0
    stats = cache.stats()
    planes = float(stats["planes"].sum())
    paper = resolve("paper")  # what the 10-fold run trains: its folds, validation share and 20 epochs
    fit_share = (1 - 1 / paper["folds"]) * (1 - paper["train"]["validation_fraction"])  # of LiTS, per fold
    result = {"cases": cases, "planes": int(planes), "phantoms_s": phantoms_s, "cache_s": cache_s,
              "epochs": epochs, "steps_per_epoch": steps, "fit_share": fit_share,
              "slices_per_s": {}, "fold_s": {}, "lits_epoch_slices": {}, "one_model_h": {}}
    for stage, column in (("liver", "stage1_slices"), ("lesion", "stage2_slices")):
        t0 = time.perf_counter()
        _, history = run_stage(run_dir, stage, 0, verbose=2)
        result["fold_s"][stage] = time.perf_counter() - t0
        rows = history[history["stage"] == stage]
        # history records the mean seconds per epoch; the first epoch's compile is in it
        result["slices_per_s"][stage] = float(rows["slices_per_epoch"].iloc[0]) / float(rows["seconds"].iloc[0])
        lits = float(stats[column].sum()) / planes * LITS_PLANES_TOTAL * fit_share
        result["lits_epoch_slices"][stage] = lits
        result["one_model_h"][stage] = lits * paper["train"]["epochs"] / result["slices_per_s"][stage] / 3600
    result["paper_run_h"] = paper["folds"] * sum(result["one_model_h"].values())
    result["paper_one_model_h_gtx960"] = PAPER_ONE_MODEL_H
    result["seconds"] = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("paper-fold-work"), help="phantoms, cache and run folder")
    parser.add_argument("--cases", type=int, default=12, help="LiTS-sized phantoms (default 12)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per stage (the paper: 20)")
    parser.add_argument("--steps", type=int, default=0, help="steps per epoch; 0 = one pass over the slices")
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default: stdout)")
    args = parser.parse_args(argv)
    from liverlib.bench.environment import environment

    result = measure_paper_fold(args.work, args.cases, args.epochs, args.steps, args.folds)
    result = {**environment(), **result}
    text = json.dumps(result, indent=2, default=float)
    if args.out:
        args.out.write_text(text + "\n")
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
