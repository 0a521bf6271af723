"""``liverlib check DIR``: validate a LiTS or MSD Task03 folder case by case."""

from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from liverlib.data import CaseFiles, describe, discover, load_case
from liverlib.errors import DataError


def check_case(files: CaseFiles) -> dict:
    """Load and validate one case; return its summary or its problem.

    Returns
    -------
    dict
        ``describe(case)`` plus ``ok=True``, or ``ok=False`` with ``error`` (one line).
    """
    try:
        summary = describe(load_case(files))
    except DataError as exc:
        return {"case": files.case_id, "ok": False, "error": str(exc)}
    summary["ok"] = True
    if summary.get("labels") == (0,):
        summary["note"] = "no liver in the segmentation"
    return summary


def format_line(summary: dict) -> str:
    """One line per case: shape, spacing, orientation, labels present."""
    shape = "x".join(str(s) for s in summary["shape"])
    spacing = "x".join(f"{s:.2f}" for s in summary["spacing_mm"])
    labels = ",".join(str(v) for v in summary.get("labels", ())) or "-"
    line = (
        f"case {summary['case']:>4}  {summary['file']:<24} {shape:>13} vox  {spacing:>16} mm  "
        f"{summary['orientation']}  labels {{{labels}}}  liver {summary.get('liver_ml', 0):7.1f} mL  "
        f"lesions {summary.get('lesions', 0)}"
    )
    return line + (f"  ({summary['note']})" if "note" in summary else "")


def check_folder(data_dir: str | Path, workers: int = 1) -> int:
    """Validate every case of ``data_dir``; print one line per case and a total.

    Returns
    -------
    int
        0 if every case is usable, 1 otherwise. A folder that cannot be read at
        all (missing, empty, a volume without its segmentation) raises DataError.
    """
    cases = discover(data_dir)
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(check_case, cases))
    else:
        results = [check_case(files) for files in cases]
    bad = 0
    for summary in results:
        if summary["ok"]:
            print(format_line(summary), flush=True)
        else:
            bad += 1
            print(f"liverlib check: error: {summary['error']}", file=sys.stderr, flush=True)
    print(f"{len(results)} cases: {len(results) - bad} usable, {bad} unusable")
    return 1 if bad else 0
