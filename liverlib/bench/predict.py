"""Prediction benchmark: seconds per volume of the two stages and the CRF, and where they go.

What is timed
-------------
``predict_s_per_volume``, ``predict_breakdown_s``
    :func:`liverlib.inference.predictor.predict_volume`'s two steps,
    :func:`~liverlib.inference.predictor.predict_probabilities` then
    :func:`~liverlib.inference.predictor.labels_from_probabilities` with the
    CRF, on ``make_phantom(0, size=512, n_slices=200)``, with two untrained
    networks of the ``paper`` profile's width (``base_filters`` 64) and its
    ``preprocess``, ``predict`` and ``crf`` sections, after a one-batch
    warm-up of each network. Untrained networks find no liver, which would
    skip stage 2 and the CRF. So the networks run exactly as in a real
    prediction (stage 1 on every plane, stage 2 on the ROI of every plane
    with liver) and their time counts, but what comes out is what a perfect
    network would give: the phantom's own labels taken through the same
    resolution (resized to the network grid and back). The liver network is
    wrapped in a :class:`StandInNetwork` that returns the phantom's liver on
    the network grid; the lesion probability of the first step is replaced
    by the phantom's lesion before the second step. Everything after stage 1
    (largest component, the stage-2 ROI, both CRFs) runs on them unchanged.
    The breakdown is the library's own record (the ``timings`` argument):
    ``stage1`` and ``stage2`` (each: preprocessing, network, resampling back
    to the image grid), of which ``network`` and ``resample`` are parts,
    ``largest_component``, ``crf`` (both CRFs,
    :func:`liverlib.inference.labels.refine_labels`), ``other`` (the total minus
    ``stage1``, ``stage2``, ``largest_component`` and ``crf``), and
    ``warmup`` (not in the total).
``predict_s_per_volume_bfloat16``, ``predict_breakdown_s_bfloat16``
    The same with the networks in bfloat16 (``liverlib predict --precision
    bfloat16``, :func:`liverlib.networks.inference_copy`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from liverlib import transforms
from liverlib.bench.sizes import FULL, BenchSizes, Log, stderr_log
from liverlib.data.phantoms import make_phantom
from liverlib.inference import predictor
from liverlib.transforms.morphology import voxel_ml

__all__ = ["StandInNetwork", "bench_predict", "BREAKDOWN_STAGES"]

#: The stages of the breakdown that add up, with ``other``, to the total.
BREAKDOWN_STAGES = ("stage1", "stage2", "largest_component", "crf")


class StandInNetwork:
    """A network whose work is real but whose output is given.

    Each :meth:`predict_on_batch` runs the wrapped Keras model on the batch (so
    its cost is timed as in a real prediction), discards the result and returns
    the next ``len(batch)`` planes of ``outputs`` instead, in order.

    Parameters
    ----------
    model : keras.Model
        The network whose cost counts.
    outputs : ndarray of float32, shape (n, rows, columns)
        What to return, plane after plane; ``(rows, columns)`` is the network's grid.
    """

    def __init__(self, model, outputs: np.ndarray):
        if tuple(outputs.shape[1:]) != tuple(model.input_shape[1:3]):
            raise ValueError(f"outputs of shape {outputs.shape[1:]} do not fit the network's input {model.input_shape[1:3]}")
        self.model = model
        self.input_shape = model.input_shape
        self.outputs = outputs
        self.served = 0  # planes returned so far

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        self.model.predict_on_batch(batch)
        out = self.outputs[self.served : self.served + len(batch)]
        if len(out) != len(batch):
            raise RuntimeError(f"the stand-in network was asked for more than its {len(self.outputs)} planes")
        self.served += len(batch)
        return out[..., None]


def _perfect_probabilities(phantom, cfg: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What perfect networks would give: the labels taken through the network grids.

    Returns
    -------
    liver_small : ndarray of float32, (planes, size, size)
        The liver mask (labels 1 and 2) resized to the stage-1 grid (linear).
    liver_prob : ndarray of float32, image's shape
        ``liver_small`` resized back to the image (linear, as stage 1's output is).
    lesion_prob : ndarray of float32, image's shape
        The lesion mask cropped to the liver ROI, resized to the stage-2 grid
        and back, pasted.
    """
    size = int(cfg["preprocess"]["size"])
    shape = phantom.image.shape[1:]
    liver = (phantom.label > 0).astype(np.float32)
    liver_small = transforms.resize_slices(transforms.pad_square(liver, 0.0), size)
    liver_prob = transforms.stage1_to_image(liver_small, shape)
    np.clip(liver_prob, 0.0, 1.0, out=liver_prob)
    lesion_prob = np.zeros(phantom.image.shape, np.float32)
    if liver.any():
        roi = transforms.liver_roi(liver, phantom.spacing, cfg["preprocess"]["roi_margin_mm"])
        lesion = transforms.crop((phantom.label == 2).astype(np.float32), roi)
        small = transforms.resize_slices(lesion, size)
        lesion_prob = transforms.paste(transforms.resize_back(small, (roi.height, roi.width)), roi)
        np.clip(lesion_prob, 0.0, 1.0, out=lesion_prob)
    return liver_small, liver_prob.astype(np.float32, copy=False), lesion_prob.astype(np.float32, copy=False)


def _warm_networks(cfg: dict, width: int, precision: str) -> tuple[tuple, float]:
    """The two untrained networks (liver, lesion), each run on one batch; and the seconds of that run."""
    from liverlib.networks import inference_copy, mixed_unet
    from liverlib.training.folds import set_seed

    set_seed(cfg["seed"])
    size = int(cfg["preprocess"]["size"])
    m = cfg["model"]
    networks = tuple(
        inference_copy(mixed_unet((size, size, 1), **{**m, "base_filters": width}, name=stage), precision)
        for stage in ("liver", "lesion")
    )
    start = time.perf_counter()
    warm = np.zeros((int(cfg["predict"]["batch_size"]), size, size, 1), np.float32)
    for network in networks:
        network.predict_on_batch(warm)
    return networks, time.perf_counter() - start


def _timed_prediction(image, spacing, models, lesion_prob, cfg: dict, log: Log) -> tuple[np.ndarray, float, dict]:
    """Labels, wall seconds and the library's timing record of one prediction with the CRF.

    The lesion probability of the first step is replaced by ``lesion_prob``
    before the second step (the CRF) runs.
    """
    timings = dict.fromkeys(("stage1", "stage2", "network", "resample", "largest_component", "crf"), 0.0)
    start = time.perf_counter()
    liver_prob = predictor.predict_probabilities(image, spacing, models, cfg, log=lambda line: log(f"predict: {line}"),
                                                 timings=timings)[0]  # fmt: skip
    labels = predictor.labels_from_probabilities(image, liver_prob, lesion_prob, spacing, cfg, use_crf=True,
                                                 timings=timings)  # fmt: skip
    total = time.perf_counter() - start
    log(f"predict: labels with the 3D CRF: {timings['crf']:.1f} s")
    return labels, total, timings


def bench_predict(cfg: dict, sizes: BenchSizes = FULL, log: Log = stderr_log, precision: str = "float32") -> dict[str, Any]:
    """Seconds of one prediction with the CRF (as :func:`liverlib.inference.predictor.predict_volume`) on a phantom volume.

    See the module docstring for exactly what is timed and why the networks'
    outputs are replaced by the phantom's labels after they are computed.

    Parameters
    ----------
    cfg : dict
        The ``paper`` profile (network width, preprocessing, predict and CRF sections).
    sizes : BenchSizes
    log : callable
        Receives the progress lines.
    precision : {"float32", "bfloat16"}
        Network precision (:func:`liverlib.networks.inference_copy`).

    Returns
    -------
    dict
        ``predict_s_per_volume``, ``predict_breakdown_s`` and ``details``.
    """
    start = time.perf_counter()
    phantom = make_phantom(0, size=sizes.predict_size, n_slices=sizes.predict_slices)
    liver_small, liver_prob, lesion_prob = _perfect_probabilities(phantom, cfg)
    log(f"predict: phantom {'x'.join(map(str, phantom.image.shape))} ready in {time.perf_counter() - start:.1f} s")
    threshold = float(cfg["predict"]["threshold"])
    stage2_planes = int((liver_prob >= threshold).reshape(liver_prob.shape[0], -1).any(axis=1).sum())
    del liver_prob

    width = int(sizes.predict_base_filters or cfg["model"]["base_filters"])
    (liver_net, lesion_net), warmup = _warm_networks(cfg, width, precision)
    stand_in = StandInNetwork(liver_net, liver_small)
    image = phantom.image.astype(np.float32, copy=False)
    labels, total, timings = _timed_prediction(image, phantom.spacing, [(stand_in, lesion_net)], lesion_prob, cfg, log)
    if stand_in.served != len(image):
        raise RuntimeError(f"stage 1 asked the liver network for {stand_in.served} planes, expected {len(image)}")
    breakdown = {**timings, "other": total - sum(timings[k] for k in BREAKDOWN_STAGES)}
    breakdown["warmup"] = warmup
    ml = voxel_ml(phantom.spacing)
    return {
        "predict_s_per_volume": total,
        "predict_breakdown_s": breakdown,
        "details": {
            "shape": [int(s) for s in image.shape],
            "spacing_mm": [float(s) for s in phantom.spacing],
            "base_filters": width,
            "precision": precision,
            "batch_size": int(cfg["predict"]["batch_size"]),
            "liver_ml_reference": float((phantom.label > 0).sum() * ml),
            "liver_ml_predicted": float((labels > 0).sum() * ml),
            "lesion_ml_reference": float((phantom.label == 2).sum() * ml),
            "lesion_ml_predicted": float((labels == 2).sum() * ml),
            "stage2_planes": stage2_planes,
        },
    }
