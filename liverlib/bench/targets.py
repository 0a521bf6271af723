"""The targets the benchmark figures are checked against, and the check."""

from __future__ import annotations

from typing import Any

from liverlib.bench.sizes import significant

__all__ = ["TARGETS", "evaluate_targets"]

#: Name -> rule on the value (see :func:`evaluate_targets`); the ratios are defined there.
TARGETS = {
    "mixed_vs_max": ">= 0.9",
    "pipeline_ratio": ">= 0.9",
    "epoch_ratio": ">= 0.9",
    "train_vs_peak_flops": ">= 0.5",
    "preprocess_vs_nifti_read": ">= 0.5",
    "rss_large_vs_small": "<= 1.2",
    "predict_s_per_volume": "<= 30",
    "predict_s_per_volume_bfloat16": "<= 30",  # the same, with `--precision bfloat16`
    "crf_s_per_volume": "<= 5",
}


def evaluate_targets(result: dict[str, Any], paired: dict[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """Each target of :data:`TARGETS`: its value, the rule and pass/fail (None if not measured).

    Parameters
    ----------
    result : dict
        The benchmark's figures (the top-level keys of the JSON).
    paired : dict, optional
        Ratios measured pairwise (the median over rounds of the ratio within
        each round), used instead of the ratio of the two medians: a round's
        two sides ran back to back under the same load, so the machine's noise
        cancels in their ratio.

    Returns
    -------
    dict
        Target name -> ``{"value": float or None, "target": rule, "pass": bool or None}``.
    """

    def ratio(a: str, b: str) -> float | None:
        if result.get(a) is None or not result.get(b):
            return None
        return result[a] / result[b]

    values = {
        "mixed_vs_max": ratio("train_slices_per_s_mixed", "train_slices_per_s_max"),
        "pipeline_ratio": result.get("pipeline_ratio"),
        "epoch_ratio": result.get("epoch_ratio"),
        "train_vs_peak_flops": ratio("train_gflops_per_s", "peak_gflops_per_s"),
        "preprocess_vs_nifti_read": ratio("preprocess_slices_per_s", "nifti_read_slices_per_s"),
        "rss_large_vs_small": ratio("peak_rss_mb_large", "peak_rss_mb_small"),
        "predict_s_per_volume": result.get("predict_s_per_volume"),
        "predict_s_per_volume_bfloat16": result.get("predict_s_per_volume_bfloat16"),
        "crf_s_per_volume": result.get("crf_s_per_volume"),
    }
    values.update({k: v for k, v in (paired or {}).items() if v is not None})
    out = {}
    for name, rule in TARGETS.items():
        value = values[name]
        op, threshold = rule.split()
        passed = None if value is None else (value >= float(threshold) if op == ">=" else value <= float(threshold))
        out[name] = {"value": None if value is None else significant(value), "target": rule, "pass": passed}
    return out
