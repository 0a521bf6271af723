"""CT data: NIfTI cases, phantoms, validation, splits, the slice cache and the training dataset."""

from liverlib.data.nifti import (
    CANONICAL_AXCODES,
    LABELS,
    Case,
    CaseFiles,
    Geometry,
    case_id_from_name,
    cohort_table,
    count_lesions,
    describe,
    discover,
    geometry_of,
    iter_cases,
    load_case,
    load_image,
    load_label,
    save_like,
)

__all__ = [
    "CANONICAL_AXCODES",
    "LABELS",
    "Case",
    "CaseFiles",
    "Geometry",
    "case_id_from_name",
    "cohort_table",
    "count_lesions",
    "describe",
    "discover",
    "geometry_of",
    "iter_cases",
    "load_case",
    "load_image",
    "load_label",
    "save_like",
]
