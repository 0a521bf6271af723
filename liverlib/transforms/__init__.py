"""Transforms of CT slices: intensity, spatial, augmentation, and the one pipeline shared by training and inference."""

from liverlib.transforms.intensity import (
    AIR_HU,
    HU_WINDOW,
    equalize_histogram,
    equalize_slices,
    fill_padding,
    window,
)
from liverlib.transforms.pipeline import (
    image_options,
    prepare_slices,
    prepare_volume_stage1,
    prepare_volume_stage2,
    preprocess_case,
    select_slices,
    stage1_to_image,
    stage2_to_volume,
)
from liverlib.transforms.spatial import (
    NO_ROI,
    Roi,
    crop,
    liver_roi,
    pad_square,
    paste,
    resize_back,
    resize_slices,
    square_box,
)

__all__ = [
    "AIR_HU",
    "HU_WINDOW",
    "NO_ROI",
    "Roi",
    "crop",
    "equalize_histogram",
    "equalize_slices",
    "fill_padding",
    "image_options",
    "liver_roi",
    "pad_square",
    "paste",
    "prepare_slices",
    "prepare_volume_stage1",
    "prepare_volume_stage2",
    "preprocess_case",
    "resize_back",
    "resize_slices",
    "select_slices",
    "square_box",
    "stage1_to_image",
    "stage2_to_volume",
    "window",
]
