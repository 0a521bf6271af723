"""Inference: the two networks on whole volumes, the 3D CRF, lesion postprocessing, cross-validated prediction.

Importing this package does not import Keras; loading a model does.
"""

from liverlib.inference.crossval import (
    choose_postprocessing,
    predict_case,
    predict_cases,
    prediction_complete,
    read_timing,
)
from liverlib.inference.models import (
    ModelPair,
    load_model_file,
    load_models,
    model_paths,
)
from liverlib.inference.predictor import (
    labels_from_probabilities,
    lesion_probability,
    liver_probability,
    network_input,
    predict_probabilities,
    predict_slices,
    predict_volume,
)
from liverlib.inference.scan import predict_file

__all__ = [
    "ModelPair",
    "choose_postprocessing",
    "labels_from_probabilities",
    "lesion_probability",
    "liver_probability",
    "load_model_file",
    "load_models",
    "model_paths",
    "network_input",
    "predict_case",
    "predict_cases",
    "predict_file",
    "predict_probabilities",
    "predict_slices",
    "predict_volume",
    "prediction_complete",
    "read_timing",
]
