"""The one scorer of a run: every test scan of its fold, before and after the CRF (``tables/metrics.csv``).

Notebook 06 scores the folds it predicted and shows the CRF's effect from these
rows; notebook 07 reads the same table for the 10-fold tables and figures.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from liverlib import data
from liverlib.atomic import atomic_path
from liverlib.data.sources import dataset_cases
from liverlib.data.splits import read_splits, select_folds, test_plan
from liverlib.errors import DataError
from liverlib.evaluation.detection import case_metrics
from liverlib.evaluation.summary import summarize, to_frame
from liverlib.inference import executors
from liverlib.runfolder import PREDICTION_FOLDERS, RunFolder, load_run


def _score_test_case(job: tuple) -> list[dict]:
    fold, files, run_dir, overlap = job
    case = data.load_case(files)
    if case.label is None:
        raise DataError(f"case {files.case_id} has no reference segmentation to score against", files.image)
    run = RunFolder(Path(run_dir))
    rows = []
    for crf in PREDICTION_FOLDERS:
        path = run.prediction(files.case_id, crf)
        if not path.is_file():
            raise DataError(f"no prediction for test case {files.case_id} of fold {fold}; run notebook 06 first", path)
        pred = data.load_label(path, case.geometry)
        for row in case_metrics(pred, case.label, case.spacing, overlap=overlap):
            rows.append({"fold": fold, "case": files.case_id, "crf": crf, **row})
    return rows


def score_run(run_dir: str | Path, folds: str | int | list[int] = "all", cases: Sequence[data.CaseFiles] | None = None,
              overlap: float = 0.5, workers: int | None = None, progress: bool = True) -> pd.DataFrame:
    """Score every test case of the selected folds, before and after the CRF; write ``tables/metrics.csv``.

    Each case is scored once, in the fold where it is a test case, against its
    reference in the run's data, with the LiTS metrics of
    :func:`liverlib.evaluation.case_metrics` (both volumes read in
    canonical orientation, as ``liverlib evaluate`` does).

    Parameters
    ----------
    run_dir : str or Path
        A run folder whose test scans have been predicted (notebook 06).
    folds : "all", int or list of int
    cases : sequence of CaseFiles, optional
        The run's cases with their references; default the run's data (:func:`liverlib.data.sources.dataset_cases`).
    overlap : float
        Share of a reference lesion that a predicted lesion must cover to detect it.
    workers : int, optional
        Processes; default the run's ``preprocess.workers``. With
        ``executor.kind: dask`` each case is a Dask task instead.
    progress : bool

    Returns
    -------
    DataFrame
        Long format (design.md): ``fold``, ``crf`` (0 before, 1 after),
        ``case``, ``structure`` (liver = labels {1, 2}, lesion = label 2),
        ``dice``, ``voe``, ``rvd``, ``assd``, ``msd``, the Dice counts and the
        lesion detection counts. Also written, atomically, to ``RUN/tables/metrics.csv``.

    Raises
    ------
    DataError
        If a test case has not been predicted yet or has no reference.
    """
    cfg = load_run(run_dir)
    run = RunFolder(Path(run_dir))
    plan = test_plan(select_folds(read_splits(run.splits), folds), dataset_cases(cfg) if cases is None else cases)
    jobs = [(fold["fold"], files, str(run.root), overlap) for fold, test in plan for files in test]
    workers = cfg["preprocess"]["workers"] if workers is None else workers
    bar = dict(total=len(jobs), desc="scoring", leave=False, disable=not progress)
    if executors.uses_dask(cfg):
        with executors.dask_client(cfg) as client:
            futures = [executors.submit(client, _score_test_case, job, name=f"score-case-{job[1].case_id}", cfg=cfg)
                       for job in jobs]
            list(tqdm(executors.results(futures), **bar))  # a failed task raises here
            results = client.gather(futures)  # in the jobs' order
    elif workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(tqdm(pool.map(_score_test_case, jobs), **bar))
    else:
        results = [_score_test_case(job) for job in tqdm(jobs, **bar)]
    frame = to_frame(row for rows in results for row in rows)
    with atomic_path(run.metrics) as tmp:
        frame.to_csv(tmp, index=False)
    return frame


def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    """The run's ``tables/metrics.csv``, as :func:`score_run` wrote it."""
    path = RunFolder(Path(run_dir)).metrics
    if not path.is_file():
        raise DataError("no scores yet; run notebook 06 (or liverlib.evaluation.run.score_run) first", path)
    return pd.read_csv(path)


def crf_effect(scores: pd.DataFrame, decimals: int | None = 4) -> pd.DataFrame:
    """The CRF's effect per structure: Dice and ASSD before and after, side by side.

    Parameters
    ----------
    scores : DataFrame
        :func:`score_run`'s table.
    decimals : int, optional
        Round the scores to this many decimals (for the written tables); None keeps all.

    Returns
    -------
    DataFrame, one row per structure (liver, lesion)
        ``cases``; ``dice_before``, ``dice_after``, ``dice_change`` (mean of
        the per-case Dice); ``global_dice_before``, ``global_dice_after``
        (2·Σ|X∩Y| / Σ(|X|+|Y|)); ``assd_before``, ``assd_after`` (mm, mean over
        the cases where it is defined); ``cases_improved``, ``cases_worse``
        (per-case Dice up or down by more than 0.001).
    """
    summary = summarize(scores, by=["crf"])
    wide = summary.pivot(index="structure", columns="crf")
    per_case = scores.pivot_table(index=["structure", "case"], columns="crf", values="dice")
    change = per_case[1] - per_case[0]
    out = pd.DataFrame(
        {
            "cases": wide[("cases", 0)].astype(int),
            "dice_before": wide[("dice_per_case", 0)],
            "dice_after": wide[("dice_per_case", 1)],
            "dice_change": wide[("dice_per_case", 1)] - wide[("dice_per_case", 0)],
            "global_dice_before": wide[("dice_global", 0)],
            "global_dice_after": wide[("dice_global", 1)],
            "assd_before": wide[("assd", 0)],
            "assd_after": wide[("assd", 1)],
            "cases_improved": (change > 1e-3).groupby(level="structure").sum().astype(int),
            "cases_worse": (change < -1e-3).groupby(level="structure").sum().astype(int),
        }
    )
    order = [s for s in ("liver", "lesion") if s in out.index]
    out = out.loc[order].rename_axis("structure").reset_index()
    return out if decimals is None else out.round(decimals)


def most_changed_case(scores: pd.DataFrame) -> int:
    """The case whose Dice the CRF changed most (liver and lesion together), for a figure.

    Cases without lesion in the reference count only by their liver, since
    their lesion Dice jumps between 0 and 1 for a single voxel.
    """
    per_case = scores.pivot_table(index=["case", "structure"], columns="crf", values="dice")
    change = (per_case[1] - per_case[0]).abs().unstack("structure")
    ref_lesion = scores[(scores["structure"] == "lesion") & (scores["crf"] == 0)].set_index("case")["ref_empty"]
    if "lesion" in change:
        change.loc[ref_lesion[ref_lesion.astype(bool)].index, "lesion"] = 0.0
    total = change.fillna(0).sum(axis=1)
    return int(total.idxmax())


def load_before_after(run_dir: str | Path, files: data.CaseFiles) -> dict[str, np.ndarray]:
    """One case's image, reference and both predictions, canonical, for figures.

    Returns
    -------
    dict
        ``image`` (HU), ``reference``, ``before``, ``after`` (uint8 labels),
        ``spacing`` and ``case_id``.
    """
    case = data.load_case(files)
    run = RunFolder(Path(run_dir))
    return {
        "image": case.image,
        "reference": case.label,
        "before": data.load_label(run.prediction(files.case_id, 0), case.geometry),
        "after": data.load_label(run.prediction(files.case_id, 1), case.geometry),
        "spacing": case.spacing,
        "case_id": case.case_id,
    }
