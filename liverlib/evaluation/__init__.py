"""Evaluation: the LiTS metrics over arrays, lesion detection, and scoring folders of label files."""

from liverlib.evaluation.detection import STRUCTURES, case_metrics, lesion_detection
from liverlib.evaluation.folders import (
    Matching,
    evaluate_folder,
    evaluate_pairs,
    find_predictions,
    find_references,
    match_folders,
    score_pair,
)
from liverlib.evaluation.metrics import (
    CONVENTIONS,
    assd,
    dice,
    dice_counts,
    global_dice,
    msd,
    rvd,
    segmentation_scores,
    surface_distances,
    voe,
)
from liverlib.evaluation.summary import COLUMNS, format_summary, summarize, to_frame

__all__ = [
    "CONVENTIONS",
    "STRUCTURES",
    "dice",
    "voe",
    "rvd",
    "assd",
    "msd",
    "surface_distances",
    "segmentation_scores",
    "dice_counts",
    "global_dice",
    "lesion_detection",
    "case_metrics",
    "COLUMNS",
    "to_frame",
    "summarize",
    "format_summary",
    "Matching",
    "find_predictions",
    "find_references",
    "match_folders",
    "score_pair",
    "evaluate_pairs",
    "evaluate_folder",
]
