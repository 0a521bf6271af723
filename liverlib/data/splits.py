"""Patient-level k-fold splits, stored as JSON (nnU-Net v2 style).

Folds split by scan, never by slice: every case is tested exactly once, and no
slice of a test scan is ever seen in training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from liverlib.atomic import write_json
from liverlib.data.nifti import CaseFiles


def kfold_splits(case_ids: list[int], folds: int = 10, seed: int = 0, validation_fraction: float = 0.0) -> list[dict]:
    """Split case ids into ``folds`` folds of near-equal size.

    Parameters
    ----------
    case_ids : list of int
        One id per scan.
    folds : int
        Number of folds k; 130 LiTS scans give 117 train / 13 test per fold.
    seed : int
        Seed of the permutation.
    validation_fraction : float
        Share of each fold's training scans held out for validation (curves,
        postprocessing choice); never taken from the test fold. They are the
        first scans of the next fold's test chunk, so every scan validates at
        most one or two folds and is fitted in the others.

    Returns
    -------
    list of dict
        ``{"fold": k, "train": [...], "val": [...], "test": [...]}``, ids sorted.
        ``train`` holds every training scan (k-1 folds, e.g. 117 of 130), ``val``
        the subset of ``train`` held out from fitting for validation.
    """
    ids = sorted(int(i) for i in case_ids)
    if len(set(ids)) != len(ids):
        raise ValueError("case ids must be unique")
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if len(ids) < folds:
        raise ValueError(f"{folds}-fold cross-validation needs at least {folds} cases, got {len(ids)}")
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    rng = np.random.default_rng(seed)
    order = [ids[i] for i in rng.permutation(len(ids))]
    chunks = np.array_split(np.arange(len(ids)), folds)
    out = []
    for k, chunk in enumerate(chunks):
        test = sorted(order[i] for i in chunk)
        # The training scans in permutation order, starting after the test chunk: validation
        # comes from the next fold's test scans, so it rotates and every scan is fitted in
        # most folds (taken from the front, the same few scans would validate every fold).
        rest = order[chunk[-1] + 1 :] + order[: chunk[0]]
        n_val = int(round(validation_fraction * len(rest)))
        if validation_fraction > 0 and len(rest) > 1:
            n_val = max(1, n_val)
        val = sorted(rest[:n_val])
        train = sorted(rest)
        out.append({"fold": k, "train": train, "val": val, "test": test})
    return out


def write_splits(path: str | Path, folds: list[dict]) -> Path:
    """Write ``{"folds": [...]}`` to ``path`` atomically."""
    return write_json(path, {"folds": folds})


def read_splits(path: str | Path) -> list[dict]:
    """Read the folds of a ``splits.json``."""
    return json.loads(Path(path).read_text())["folds"]


def fold_table(folds: list[dict]):
    """A small table: per fold, the number of training, validation and test scans and the test ids."""
    import pandas as pd

    return pd.DataFrame(
        [
            {"fold": f["fold"], "train": len(f["train"]), "val": len(f.get("val", [])), "test": len(f["test"]),
             "test cases": ", ".join(map(str, f["test"]))}
            for f in folds
        ]
    ).set_index("fold")


def run_splits(case_ids: list[int], folds: int, seed: int, validation_fraction: float, path: str | Path) -> list[dict]:
    """Make and write a run's ``splits.json``; an empty list (and no file) if there are too few scans.

    A single scan, such as the real CT in ``tests/data``, can still be loaded,
    shown and preprocessed, but cannot be cross-validated.
    """
    if len(case_ids) < max(folds, 2):
        print(f"{len(case_ids)} scan(s): too few for {folds}-fold cross-validation, so no splits.json "
              f"(set folds to at most the number of scans, and at least 2, to train)")
        return []
    folds_ = kfold_splits(case_ids, folds, seed=seed, validation_fraction=validation_fraction)
    write_splits(path, folds_)
    return folds_


def test_plan(folds: list[dict], cases: Sequence[CaseFiles]) -> list[tuple[dict, list[CaseFiles]]]:
    """Each fold with the CaseFiles of its test scans.

    Raises
    ------
    ValueError
        If a fold tests a case that is not among ``cases``.
    """
    by_id = {c.case_id: c for c in cases}
    out = []
    for fold in folds:
        missing = [c for c in fold["test"] if c not in by_id]
        if missing:
            raise ValueError(f"fold {fold['fold']} tests cases {missing} that are not among the given cases")
        out.append((fold, [by_id[c] for c in fold["test"]]))
    return out


def fit_and_val(fold: dict) -> tuple[list[int], list[int]]:
    """A fold's scans to fit on (``train`` minus ``val``) and to validate on."""
    val_ids = list(fold.get("val", []))
    return [c for c in fold["train"] if c not in set(val_ids)], val_ids


def select_folds(folds: list[dict], which: str | int | list[int] = "all") -> list[dict]:
    """The folds a notebook parameter names: ``"all"``, an int, or a list of ints."""
    if which == "all":
        return folds
    wanted = [which] if isinstance(which, int) else list(which)
    known = {f["fold"] for f in folds}
    unknown = sorted(set(wanted) - known)
    if unknown:
        raise ValueError(f"no fold {unknown} in splits.json (folds {min(known)}-{max(known)})")
    return [f for f in folds if f["fold"] in set(wanted)]
