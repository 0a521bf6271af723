"""Cross-validated prediction: every test scan by its own fold's models, before and after the CRF."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
from tqdm.auto import tqdm

from liverlib import data
from liverlib.atomic import atomic_path
from liverlib.data.splits import read_splits, select_folds, test_plan
from liverlib.inference import executors, postprocess
from liverlib.inference.models import ModelPair, load_models, run_precision
from liverlib.inference.predictor import labels_from_probabilities, predict_probabilities
from liverlib.inference.workers import LabelWorkers
from liverlib.runfolder import RunFolder, load_run


def prediction_complete(run_dir: str | Path, case_id: int) -> bool:
    """True when both of a case's prediction files exist (they are written atomically)."""
    run = RunFolder(Path(run_dir))
    return run.prediction(case_id, 0).is_file() and run.prediction(case_id, 1).is_file()


def _labels_and_save(image, liver_prob, lesion_prob, spacing, geometry, cfg: dict, paths, min_lesion_ml: float):
    """A case's labels before and after the CRF, small lesions removed, written to ``paths``; a label worker's job.

    Returns ``(crf_s, seconds)``: the CRF's seconds and this job's.
    """
    started = time.perf_counter()
    before = labels_from_probabilities(image, liver_prob, lesion_prob, spacing, cfg, use_crf=False)
    t0 = time.perf_counter()
    after = labels_from_probabilities(image, liver_prob, lesion_prob, spacing, cfg, use_crf=True)
    crf_s = time.perf_counter() - t0
    before, after = (postprocess.remove_small_lesions(x, spacing, min_lesion_ml) for x in (before, after))
    data.save_like(before, geometry, paths[0])
    data.save_like(after, geometry, paths[1])  # written last: its presence marks the case complete
    return crf_s, time.perf_counter() - started


def predict_case(files: data.CaseFiles, models: Sequence[ModelPair], cfg: dict, run_dir: str | Path, fold: int = -1,
                 min_lesion_ml: float = 0.0, pool: LabelWorkers | None = None,
                 done: Callable[[dict], None] | None = None) -> dict | None:
    """Predict one case before and after the CRF, from one pass of the networks, and save both.

    The probabilities are computed once; :func:`labels_from_probabilities`
    derives the labels without and with the CRF, and both lose their lesion
    components under ``min_lesion_ml`` (:func:`liverlib.inference.postprocess.remove_small_lesions`).
    Both are written with the case's stored geometry, so
    ``liverlib evaluate RUN/predictions/after-crf DATA`` compares them with the
    references directly.

    With a ``pool`` (:class:`~liverlib.inference.workers.LabelWorkers`) the
    labelling runs there and this returns as soon as the networks are done:
    ``done(row)`` receives the timing row once the files are written, and the
    return value is None.

    Returns
    -------
    dict or None
        One row of the timing table: ``fold``, ``case``, ``planes``, ``rows``,
        ``columns``, ``network_s`` (both stages), ``crf_s`` (labels with the
        CRF), ``total_s`` (reading, networks, labelling and writing; time spent
        waiting for a label worker is left out).
    """
    started = time.perf_counter()
    image, spacing, geometry = data.load_image(files.image)
    t0 = time.perf_counter()
    liver_prob, lesion_prob = predict_probabilities(image, spacing, models, cfg)
    t1 = time.perf_counter()
    run = RunFolder(Path(run_dir))
    paths = (run.prediction(files.case_id, 0), run.prediction(files.case_id, 1))
    planes, rows, columns = image.shape
    row = {"fold": int(fold), "case": int(files.case_id), "planes": planes, "rows": rows, "columns": columns,
           "network_s": round(t1 - t0, 3)}  # fmt: skip

    def finish(seconds: tuple[float, float]) -> None:
        row.update(crf_s=round(seconds[0], 3), total_s=round(t1 - started + seconds[1], 3))
        if done is not None:
            done(row)

    job = (image, liver_prob, lesion_prob, spacing, geometry, cfg, paths, float(min_lesion_ml))
    if pool is None:
        finish(_labels_and_save(*job))
        return row
    pool.submit(_labels_and_save, *job, done=finish)
    return None


def read_timing(run_dir: str | Path) -> pd.DataFrame:
    """``RUN/predictions/timing.csv``: seconds per case (empty table if none yet)."""
    path = RunFolder(Path(run_dir)).timing
    if path.is_file():
        return pd.read_csv(path)
    return pd.DataFrame(columns=["fold", "case", "planes", "rows", "columns", "network_s", "crf_s", "total_s"])


def _write_timing(run_dir: str | Path, table: pd.DataFrame) -> None:
    with atomic_path(RunFolder(Path(run_dir)).timing) as tmp:
        table.to_csv(tmp, index=False)


def predict_cases(
    run_dir: str | Path,
    cases: Sequence[data.CaseFiles],
    folds: str | int | list[int] = "all",
    cfg: dict | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Predict every test scan of every fold with that fold's models, before and after the CRF.

    Writes ``RUN/predictions/before-crf/segmentation-N.nii.gz`` and
    ``RUN/predictions/after-crf/segmentation-N.nii.gz`` for each test case of
    each selected fold, using only the models of the fold that tested it (no
    scan is segmented by a network that trained on it), and records the seconds
    spent per case in ``RUN/predictions/timing.csv``. Cases whose two files
    exist are skipped, so an interrupted run resumes; a fold's models are
    loaded only if one of its cases is left to do. Before its test scans, a
    fold chooses its minimum lesion volume on its validation scans
    (:func:`choose_postprocessing`).

    Parameters
    ----------
    run_dir : str or Path
        A run folder with ``splits.json``, ``config.yaml`` and trained models.
    cases : sequence of CaseFiles
        The run's cases (:func:`liverlib.data.sources.dataset_cases`).
    folds : "all", int or list of int
        The folds to predict.
    cfg : dict, optional
        The run's config; default read from ``config.yaml``.
    progress : bool
        Show a progress bar over cases.

    Returns
    -------
    DataFrame
        The timing table (every case predicted so far, this call's and earlier ones).
    """
    cfg = load_run(run_dir) if cfg is None else cfg
    plan = test_plan(select_folds(read_splits(RunFolder(Path(run_dir)).splits), folds), cases)
    todo = [(fold, files) for fold, test in plan for files in test if not prediction_complete(run_dir, files.case_id)]
    timing = read_timing(run_dir)
    bar = tqdm(total=len(todo), desc="predict", unit="case", disable=not progress)

    def record(row: dict) -> None:  # in this process: the one writer of timing.csv
        nonlocal timing
        timing = pd.concat([timing[timing["case"] != row["case"]], pd.DataFrame([row])], ignore_index=True)
        _write_timing(run_dir, timing.sort_values(["fold", "case"]))
        bar.update(1)

    if executors.uses_dask(cfg):
        _predict_on_dask(run_dir, todo, cfg, record)
        bar.close()
        return read_timing(run_dir)
    with LabelWorkers(label_workers(cfg)) as pool:
        for fold, test in plan:
            pending = [files for files in test if not prediction_complete(run_dir, files.case_id)]
            if not pending:
                continue
            models = load_models(run_dir, fold["fold"], run_precision(cfg))
            min_ml = choose_postprocessing(run_dir, fold, cases, models, cfg, pool)
            for files in pending:
                predict_case(files, models, cfg, run_dir, fold["fold"], min_ml, pool=pool, done=record)
            del models
            _clear_keras_session()
    bar.close()
    return read_timing(run_dir)


def _predict_on_dask(run_dir: str | Path, todo: list, cfg: dict, record: Callable[[dict], None]) -> None:
    """The cases left to do as Dask tasks: per fold one postprocessing choice, then one task per case."""
    run_dir = str(Path(run_dir).resolve())
    with executors.dask_client(cfg) as client:
        choices, futures = {}, []
        for fold, files in todo:
            k = fold["fold"]
            if k not in choices:
                choices[k] = executors.submit(client, postprocessing_task, run_dir, k, name=f"postprocessing-fold-{k}", cfg=cfg)
            futures.append(executors.submit(client, predict_case_task, run_dir, k, files, choices[k],
                                            name=f"predict-case-{files.case_id}", cfg=cfg))
        for row in executors.results(futures):
            record(row)


_WORKER_FOLD: dict = {}  # a Dask worker's loaded models: {(run folder, fold): models}, the last fold only


def _fold_models(run_dir: str, fold: int, cfg: dict) -> Sequence[ModelPair]:
    key = (run_dir, fold)
    if key not in _WORKER_FOLD:
        if _WORKER_FOLD:
            _WORKER_FOLD.clear()
            _clear_keras_session()
        _WORKER_FOLD[key] = load_models(run_dir, fold, run_precision(cfg))
    return _WORKER_FOLD[key]


def postprocessing_task(run_dir: str, fold: int) -> float:
    """A fold's minimum lesion volume (:func:`choose_postprocessing`), as a Dask task."""
    from liverlib.data.sources import dataset_cases

    cfg = load_run(run_dir)
    entry = select_folds(read_splits(RunFolder(Path(run_dir)).splits), fold)[0]
    return choose_postprocessing(run_dir, entry, dataset_cases(cfg), _fold_models(run_dir, fold, cfg), cfg)


def predict_case_task(run_dir: str, fold: int, files: data.CaseFiles, min_lesion_ml: float) -> dict:
    """One test case of a fold (:func:`predict_case`), as a Dask task; returns its timing row."""
    cfg = load_run(run_dir)
    return predict_case(files, _fold_models(run_dir, fold, cfg), cfg, run_dir, fold, min_lesion_ml)


def label_workers(cfg: dict) -> int:
    """The run's number of label worker processes (``predict.label_workers``; 0 for runs made before the key)."""
    return int(cfg["predict"].get("label_workers", 0))


def choose_postprocessing(run_dir: str | Path, fold: dict, cases: Sequence[data.CaseFiles], models: Sequence[ModelPair],
                          cfg: dict, pool: LabelWorkers | None = None) -> float:
    """A fold's minimum lesion volume (mL), chosen once on its validation scans and recorded.

    With a single candidate in ``predict.min_lesion_ml`` that candidate is
    used and nothing is predicted. Otherwise the fold's ``val`` scans are
    segmented (with the CRF, as the final labels are) by the fold's own models
    and :func:`liverlib.inference.postprocess.choose_min_lesion_ml` picks the candidate;
    the choice goes to ``models/fold-K/postprocessing.json`` and is read back on
    a rerun. The test scans play no part. With a ``pool`` the validation
    scans' CRFs run there.
    """
    candidates = [float(c) for c in cfg["predict"].get("min_lesion_ml", [0.0])]
    if len(candidates) == 1:
        return candidates[0]
    chosen = postprocess.read_min_lesion_ml(run_dir, fold["fold"])
    if chosen is not None:
        return chosen
    by_id = {files.case_id: files for files in cases}
    val = [by_id[c] for c in fold.get("val", []) if c in by_id]
    predictions = []
    workers = pool or LabelWorkers(0)  # without a pool: each scan labelled at once, here
    for files in val:
        case = data.load_case(files)
        probs = predict_probabilities(case.image, case.spacing, models, cfg)
        workers.submit(labels_from_probabilities, case.image, *probs, case.spacing, cfg,
                       done=lambda labels, case=case: predictions.append((labels, case.label, case.spacing)))
    workers.drain()
    best, scores = postprocess.choose_min_lesion_ml(predictions, candidates)
    postprocess.write_choice(run_dir, fold["fold"], best, scores, [files.case_id for files in val])
    return best


def _clear_keras_session() -> None:
    """Free the previous fold's models before the next ones are loaded."""
    import keras  # already loaded with the models; importing this module stays light

    keras.backend.clear_session()
