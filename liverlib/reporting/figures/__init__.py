"""The paper's figures, one module per notebook: plain plotting functions over arrays, saved by :func:`save_figure`."""

from liverlib.reporting.figures.common import (
    DISPLAY_WINDOW,
    DPI,
    LABEL_COLOURS,
    montage,
    outline,
    representative_slice,
    save_figure,
    show_ct,
    show_gray,
)
from liverlib.reporting.figures.crf import crf_before_after, crf_change_plane
from liverlib.reporting.figures.data import (
    compare_with_histograms,
    fig1_samples,
    phantom_vs_real,
    sample_grid,
)
from liverlib.reporting.figures.evaluation import (
    dice_distribution,
    difference_overlay,
    lesion_predictions,
    prediction_vs_reference,
)
from liverlib.reporting.figures.network import (
    EDGE_KERNELS,
    first_layer_features,
    pooling_comparison,
    pooling_toy_examples,
    unet_diagram,
)
from liverlib.reporting.figures.preprocessing import (
    PreprocessingSteps,
    fig2_preprocessing,
    fig3_augmentation,
    fig4_equalization,
    preprocessing_steps,
)
from liverlib.reporting.figures.real_ct import real_ct_predictions
from liverlib.reporting.figures.training import training_curves, training_input

__all__ = [
    "real_ct_predictions",
    "DISPLAY_WINDOW",
    "DPI",
    "EDGE_KERNELS",
    "LABEL_COLOURS",
    "PreprocessingSteps",
    "compare_with_histograms",
    "crf_before_after",
    "crf_change_plane",
    "dice_distribution",
    "difference_overlay",
    "fig1_samples",
    "fig2_preprocessing",
    "fig3_augmentation",
    "fig4_equalization",
    "first_layer_features",
    "lesion_predictions",
    "montage",
    "outline",
    "phantom_vs_real",
    "pooling_comparison",
    "pooling_toy_examples",
    "prediction_vs_reference",
    "preprocessing_steps",
    "representative_slice",
    "sample_grid",
    "save_figure",
    "show_ct",
    "show_gray",
    "training_curves",
    "training_input",
    "unet_diagram",
]
