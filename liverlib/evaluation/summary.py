"""Long-format tables of per-case scores, their per-structure summary and its text report."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from liverlib.evaluation.metrics import CONVENTIONS, global_dice

__all__ = ["COLUMNS", "to_frame", "summarize", "format_summary"]

#: Column order of the long-format table (extra columns, e.g. ``fold``, ``crf``, come after ``case``).
COLUMNS = (
    "case", "structure", "dice", "voe", "rvd", "assd", "msd",
    "intersection", "pred_voxels", "ref_voxels", "tp", "fp", "fn", "precision", "recall",
    "ref_lesions", "pred_lesions", "ref_empty", "pred_empty", "affine_match", "pred_file", "ref_file",
)
_COUNT_COLUMNS = ("intersection", "pred_voxels", "ref_voxels", "tp", "fp", "fn", "ref_lesions", "pred_lesions")
_LEADING = ("fold", "crf")


def to_frame(rows: Iterable[dict]) -> pd.DataFrame:
    """Rows of :func:`~liverlib.evaluation.detection.case_metrics` as a long-format table.

    Columns follow :data:`COLUMNS` (``fold`` and ``crf`` first when present,
    unknown ones last); counts become nullable integers, so the liver rows'
    empty detection counts stay empty in a CSV instead of becoming ``nan``.
    """
    frame = pd.DataFrame(list(rows))
    order = [c for c in _LEADING if c in frame] + [c for c in COLUMNS if c in frame]
    frame = frame[order + [c for c in frame.columns if c not in order]]
    for column in _COUNT_COLUMNS:
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    return frame


# --------------------------------------------------------------------------- summary


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _pooled(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else float("nan")


def summarize(df: pd.DataFrame, by: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-structure summary of a long-format metrics table.

    Parameters
    ----------
    df : DataFrame
        Rows of :func:`liverlib.evaluation.detection.case_metrics` (``structure``, the five
        metrics, the Dice counts, ``ref_empty`` and, for lesions, ``tp``,
        ``fp``, ``fn``).
    by : sequence of str, optional
        Extra grouping columns, e.g. ``["fold", "crf"]``. Default: ``["crf"]``
        when the table has that column (scores before and after the CRF are
        never pooled), else none.

    Returns
    -------
    DataFrame, one row per group and structure
        ``cases``; ``dice_per_case`` (mean of the per-case Dice, the LiTS
        "Dice per case"); ``dice_global`` (2·Σ|X∩Y| / Σ(|X|+|Y|)); ``voe``,
        ``rvd``, ``assd``, ``msd``: means over the cases where they are
        defined, with ``rvd_undefined`` and ``surface_undefined`` counting the
        cases skipped (see :data:`liverlib.evaluation.metrics.CONVENTIONS`);
        ``ref_empty``: cases without the structure in the reference; ``tp``,
        ``fp``, ``fn`` pooled over cases and ``precision``, ``recall`` from
        them (lesions only; nan when undefined).
    """
    if df.empty:
        raise ValueError("no rows to summarize")
    if by is None:
        by = [c for c in ("crf",) if c in df]
    missing = [c for c in (*by, "structure") if c not in df]
    if missing:
        raise ValueError(f"the table has no column {', '.join(missing)}; columns: {', '.join(df.columns)}")
    keys = [*by, "structure"]
    out = []
    for key, group in df.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(keys, key))
        row.update(
            cases=int(len(group)),
            dice_per_case=float(group["dice"].mean()),
            dice_global=global_dice(group),
            voe=float(group["voe"].mean()),
            rvd=float(group["rvd"].mean()),  # pandas skips nan
            assd=float(group["assd"].mean()),
            msd=float(group["msd"].mean()),
            rvd_undefined=int(group["rvd"].isna().sum()),
            surface_undefined=int(group["assd"].isna().sum()),
            ref_empty=int(group["ref_empty"].astype(bool).sum()),
        )
        if "tp" in group and group["tp"].notna().any():
            tp, fp, fn = (int(group[c].sum()) for c in ("tp", "fp", "fn"))
            row.update(tp=tp, fp=fp, fn=fn, precision=_pooled(tp, tp + fp), recall=_pooled(tp, tp + fn))
        out.append(row)
    summary = pd.DataFrame(out)
    for column in ("tp", "fp", "fn"):
        if column in summary:
            summary[column] = summary[column].astype("Int64")
    return summary


_SUMMARY_COLUMNS = {
    "structure": "structure",
    "cases": "cases",
    "dice_per_case": "dice/case",
    "dice_global": "dice global",
    "voe": "voe",
    "rvd": "rvd",
    "assd": "assd mm",
    "msd": "msd mm",
    "ref_empty": "ref empty",
}


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return "-"
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}"
    return str(value)


def format_summary(summary: pd.DataFrame, overlap: float = 0.5) -> str:
    """The summary of :func:`summarize` as a plain-text table with its notes."""
    head = list(summary.columns[: summary.columns.get_loc("structure")])  # the grouping columns
    columns = [*head, *_SUMMARY_COLUMNS]
    titles = {**{c: c for c in head}, **_SUMMARY_COLUMNS}
    cells = [[_fmt(row[c], 2 if c in ("assd", "msd") else 3) for c in columns] for _, row in summary.iterrows()]
    widths = [max(len(titles[c]), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(titles[c].ljust(w) if i == 0 else titles[c].rjust(w) for i, (c, w) in enumerate(zip(columns, widths)))]
    lines += ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))) for r in cells]

    notes = []
    for _, row in summary.iterrows():
        where = " ".join(f"{c}={row[c]}" for c in head)
        label = f"{row['structure']}{' (' + where + ')' if where else ''}"
        if "tp" in row and row["tp"] is not pd.NA and not pd.isna(row["tp"]):
            notes.append(
                f"{label} detection (IoU > {overlap:g}, pooled over cases): TP {row['tp']}, FP {row['fp']}, "
                f"FN {row['fn']} -> precision {_fmt(row['precision'])}, recall {_fmt(row['recall'])}"
            )
        if row["ref_empty"]:
            notes.append(
                f"{label}: {row['ref_empty']} of {_count(row['cases'], 'case')} without it in the reference; "
                f"a case empty in both scores Dice {CONVENTIONS['both_empty']['dice']:g} (LiTS convention)"
            )
        if row["surface_undefined"]:
            notes.append(f"{label}: ASSD/MSD undefined in {_count(row['surface_undefined'], 'case')} (one mask empty), skipped")
        if row["rvd_undefined"]:
            notes.append(f"{label}: RVD undefined in {_count(row['rvd_undefined'], 'case')} (empty reference), skipped")
    return "\n".join(lines + notes)
