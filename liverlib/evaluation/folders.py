"""Score label volumes against references with the LiTS metrics (``liverlib evaluate``).

Any predictions can be scored, ours or another tool's (nnU-Net...). Files are
matched by the case number at the end of their name, before ``.nii[.gz]``:
``segmentation-3.nii``, ``volume-3.nii.gz``, ``liver_3.nii.gz``,
``test-segmentation-3.nii``, ``case_3.nii.gz`` and ``3.nii.gz`` are all case 3.
References are the labels of a LiTS or MSD Task03 folder, or a flat folder of
label files. Both sides are loaded in the canonical orientation of
:mod:`liverlib.data`, so a prediction stored in another orientation than its
reference still compares voxel for voxel; the voxel spacing is the
reference's.

The per-case scores come from :func:`liverlib.evaluation.detection.case_metrics`
(one row per case and structure, "liver" = labels {1, 2}, "lesion" = label 2);
:func:`liverlib.evaluation.summary.summarize` turns them into the per-structure
table, with the per-case mean and the global Dice side by side.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform
from tqdm.auto import tqdm

from liverlib.atomic import atomic_path
from liverlib.data import (
    CANONICAL_AXCODES,
    Geometry,
    case_id_from_name,
    discover,
    geometry_of,
    load_label,
)
from liverlib.data.nifti import LITS_IMAGE, LITS_LABEL, NIFTI_SUFFIXES
from liverlib.errors import DataError
from liverlib.evaluation.detection import case_metrics
from liverlib.evaluation.summary import _count, format_summary, summarize, to_frame

__all__ = [
    "Matching",
    "find_predictions",
    "find_references",
    "match_folders",
    "score_pair",
    "evaluate_pairs",
    "evaluate_folder",
]

# Prediction and reference affines agree when their canonical voxel-to-world
# maps differ by less than this (mm); float32 headers round well below it. A
# mismatch only warns, so it is looser than the loader's check in liverlib.data.
_AFFINE_TOL_MM = 0.01


# --------------------------------------------------------------------------- matching files


@dataclass
class Matching:
    """Predictions paired with references by case number.

    Attributes
    ----------
    pairs : list of (case_id, pred_path, ref_path)
        Sorted by case number.
    skipped : list of (pred_path, reason)
        Prediction files that are not scored.
    missing : list of (case_id, ref_path)
        Reference cases that have no prediction.
    """

    pairs: list[tuple[int, Path, Path]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    missing: list[tuple[int, Path]] = field(default_factory=list)


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.name.endswith(NIFTI_SUFFIXES)
    )


def _by_case(files: Iterable[Path]) -> tuple[dict[int, Path], list[Path]]:
    """Index files by case number; return also those without one."""
    found: dict[int, Path] = {}
    unnumbered = []
    for path in files:
        case_id = case_id_from_name(path)
        if case_id is None:
            unnumbered.append(path)
            continue
        if case_id in found:
            raise DataError(f"two files for case {case_id}: {found[case_id].name} and {path.name}", path.parent)
        found[case_id] = path
    return found, unnumbered


def _require_folder(folder: str | Path, role: str) -> Path:
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"no such {role} folder", folder)
    if not folder.is_dir():
        raise DataError(f"not a folder ({role} folder expected)", folder)
    return folder


def find_predictions(pred_dir: str | Path) -> tuple[dict[int, Path], list[Path]]:
    """The NIfTI files of a prediction folder, by case number.

    Usually a flat folder of label files. A LiTS or MSD data folder (CT
    volumes with their segmentations) also works: its segmentations are the
    predictions, so ``liverlib evaluate REF REF`` is a sanity check.

    Returns
    -------
    by_case : dict of int to Path
    unnumbered : list of Path
        NIfTI files whose name carries no case number.

    Raises
    ------
    DataError
        If the folder does not exist, holds no NIfTI file, or holds two files
        for one case.
    """
    folder = _require_folder(pred_dir, "prediction")
    try:
        labelled = {c.case_id: c.label for c in discover(folder, require_labels=False) if c.label is not None}
    except DataError:
        labelled = {}  # not a data folder (e.g. segmentation-N files alone): read it flat
    if labelled:
        return labelled, []
    files = _nifti_files(folder)
    if not files:
        raise DataError("no prediction files (.nii or .nii.gz) in this folder", folder)
    return _by_case(files)


def find_references(ref_dir: str | Path) -> dict[int, Path]:
    """The reference label files of a folder, by case number.

    Accepted layouts, tried in order: a LiTS or MSD Task03 folder as
    :func:`liverlib.data.discover` reads it (its ``segmentation-N`` or
    ``labelsTr/liver_N`` files); ``segmentation-N`` files without their
    volumes (also one sub-folder deep); ``labelsTr/`` alone; a flat folder of
    label files named with their case number (``volume-N`` CT files excluded).

    Raises
    ------
    DataError
        If the folder does not exist or holds no label file.
    """
    root = _require_folder(ref_dir, "reference")
    try:
        refs = {c.case_id: c.label for c in discover(root, require_labels=False) if c.label is not None}
    except DataError:
        refs = {}  # e.g. labels without their CT volumes: read the folder as flat below
    if refs:
        return refs
    if (root / "labelsTr").is_dir():
        files = _nifti_files(root / "labelsTr")
    else:
        folders = [root] + sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        files = [p for folder in folders for p in _nifti_files(folder) if LITS_LABEL.match(p.name)]
        if not files:
            files = [p for p in _nifti_files(root) if not LITS_IMAGE.match(p.name)]
    refs, _ = _by_case(files)
    if not refs:
        raise DataError(
            "no reference labels found: expected LiTS segmentation-N.nii[.gz], MSD labelsTr/liver_N.nii.gz, "
            "or label files named with their case number",
            root,
        )
    return refs


def match_folders(pred_dir: str | Path, ref_dir: str | Path) -> Matching:
    """Pair the predictions of ``pred_dir`` with the references of ``ref_dir``.

    Raises
    ------
    DataError
        If a folder is missing or empty, or no prediction matches a reference.
    """
    preds, unnumbered = find_predictions(pred_dir)
    refs = find_references(ref_dir)
    matching = Matching()
    matching.skipped = [(p, "no case number in the file name") for p in unnumbered]
    for case_id, path in sorted(preds.items()):
        if case_id in refs:
            matching.pairs.append((case_id, path, refs[case_id]))
        else:
            matching.skipped.append((path, f"no reference for case {case_id}"))
    matching.missing = [(case_id, refs[case_id]) for case_id in sorted(set(refs) - set(preds))]
    if not matching.pairs:
        raise DataError(
            f"no prediction matches a reference case: predictions for cases {_ids(preds)}, "
            f"references for cases {_ids(refs)} in {Path(ref_dir)}",
            pred_dir,
        )
    return matching


def _ids(items: Iterable[int], limit: int = 8) -> str:
    ids = sorted(items)
    if not ids:
        return "none"
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


# --------------------------------------------------------------------------- scoring


def _header(path: Path) -> Geometry:
    """Open a NIfTI header (no voxel data) and its geometry, or raise a one-line DataError."""
    if not path.is_file():
        raise DataError("file not found", path)
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for bad headers
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise DataError(f"not a readable NIfTI file ({type(exc).__name__}: {reason})", path) from None
    return geometry_of(img, path)


def _canonical_shape(geometry: Geometry) -> tuple[int, int, int]:
    """The (plane, row, column) shape that ``Geometry.to_canonical`` gives, from the header alone."""
    ornt = ornt_transform(io_orientation(geometry.affine), axcodes2ornt(CANONICAL_AXCODES))
    ijk = [0, 0, 0]
    for axis, (target, _) in enumerate(ornt):
        ijk[int(target)] = geometry.shape[axis]
    return (ijk[2], ijk[1], ijk[0])


def _check_pair(pred_path: Path, ref_path: Path) -> bool:
    """Check that a prediction fits its reference; return whether their affines agree.

    Raises
    ------
    DataError
        Naming the prediction, if its canonical shape differs from the reference's.
    """
    pred_geometry = _header(pred_path)
    ref_geometry = _header(ref_path)
    pred_shape, ref_shape = _canonical_shape(pred_geometry), _canonical_shape(ref_geometry)
    if pred_shape != ref_shape:
        raise DataError(
            f"shape {pred_shape} (plane, row, column) does not match the reference's {ref_shape} ({ref_path.name})",
            pred_path,
        )
    return bool(np.allclose(pred_geometry.canonical_affine(), ref_geometry.canonical_affine(), atol=_AFFINE_TOL_MM))


def score_pair(case_id: int, pred_path: str | Path, ref_path: str | Path, overlap: float = 0.5) -> list[dict]:
    """Load one prediction and its reference and score them.

    Both are read in the canonical orientation, so the prediction's storage
    orientation does not matter; the spacing is the reference's.

    Returns
    -------
    list of dict
        The rows of :func:`liverlib.evaluation.detection.case_metrics`, with ``case``,
        ``affine_match``, ``pred_file`` and ``ref_file`` added.

    Raises
    ------
    DataError
        For an unreadable file, labels outside {0, 1, 2}, or a prediction
        whose shape does not match its reference (naming the prediction).
    """
    pred_path, ref_path = Path(pred_path), Path(ref_path)
    affine_match = _check_pair(pred_path, ref_path)
    spacing = _header(ref_path).spacing()
    ref = load_label(ref_path)
    pred = load_label(pred_path)
    rows = case_metrics(pred, ref, spacing, overlap=overlap)
    for row in rows:
        row.update(case=int(case_id), affine_match=affine_match, pred_file=pred_path.name, ref_file=ref_path.name)
    return rows


def evaluate_pairs(
    pairs: Sequence[tuple[int, str | Path, str | Path]],
    overlap: float = 0.5,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Score (case_id, pred_path, ref_path) pairs into one long-format table.

    Every pair's header is checked first, so a mismatched prediction stops the
    run before any case is scored rather than after most of them.

    Parameters
    ----------
    pairs : sequence of (int, path, path)
    overlap : float
        IoU threshold of lesion detection (LiTS: 0.5).
    progress : bool, optional
        Show a progress bar; default: when stderr is a terminal.

    Returns
    -------
    DataFrame
        Two rows per case (liver, lesion); columns as :data:`liverlib.evaluation.summary.COLUMNS`.
    """
    pairs = [(int(c), Path(p), Path(r)) for c, p, r in pairs]
    for _, pred_path, ref_path in pairs:
        _check_pair(pred_path, ref_path)
    rows: list[dict] = []
    disable = None if progress is None else not progress
    for case_id, pred_path, ref_path in tqdm(pairs, desc="evaluate", unit="case", disable=disable):
        rows.extend(score_pair(case_id, pred_path, ref_path, overlap=overlap))
    return to_frame(rows)


# --------------------------------------------------------------------------- command


def evaluate_folder(
    pred_dir: str | Path,
    ref_dir: str | Path,
    out: str | Path | None = None,
    overlap: float = 0.5,
    progress: bool | None = None,
) -> int:
    """``liverlib evaluate PRED_DIR REF_DIR [--out CSV]``: score, print, write.

    Prints the per-structure summary, the prediction files skipped (no case
    number, or no reference) and the reference cases that have no prediction,
    then writes the long-format table to ``out`` atomically, if given.

    Returns
    -------
    int
        0 when every prediction that has a reference was scored.

    Raises
    ------
    DataError
        For a missing or empty folder, when nothing can be matched, or for a
        prediction that cannot be scored (it is named; nothing is written).
    """
    matching = match_folders(pred_dir, ref_dir)
    table = evaluate_pairs(matching.pairs, overlap=overlap, progress=progress)
    summary = summarize(table)

    print(f"scored {_count(len(matching.pairs), 'case')}: predictions {Path(pred_dir)} vs references {Path(ref_dir)}")
    print(format_summary(summary, overlap=overlap))
    if matching.missing:
        print(f"missing: {_count(len(matching.missing), 'reference case')} without a prediction, not scored "
              f"(cases {_ids(c for c, _ in matching.missing)})")
    if matching.skipped:
        shown = "; ".join(f"{p.name} ({why})" for p, why in matching.skipped[:8])
        more = f"; ... ({len(matching.skipped)} in all)" if len(matching.skipped) > 8 else ""
        print(f"skipped: {_count(len(matching.skipped), 'prediction file')}: {shown}{more}")
    mismatched = table.loc[~table["affine_match"].astype(bool), "case"].unique()
    if mismatched.size:
        print(f"warning: {_count(mismatched.size, 'prediction')} with another voxel-to-world affine than the "
              f"reference (cases {_ids(mismatched)}); each file was read in its own canonical frame: check that "
              "they were written on the reference's grid")
    if out is not None:
        with atomic_path(out) as tmp:
            table.to_csv(tmp, index=False)  # full precision: the CSV round-trips exactly
        print(f"wrote {out}")
    sys.stdout.flush()
    return 0
