"""Whole-volume prediction: both networks on a CT volume, then the labels with or without the 3D CRF.

One CT volume (canonical ``(plane, row, column)`` HU, see :mod:`liverlib.data`)
goes through the paper's steps (v)-(vii):

1. **Stage 1, liver.** Every plane is preprocessed exactly as in training
   (:func:`liverlib.transforms.prepare_volume_stage1`: HU window, a non-square
   slice padded with air to a square, resize to 96 x 96, histogram equalization),
   scaled to [0, 1] as ``gray / (levels - 1)`` (as
   :class:`liverlib.data.dataset.SliceDataset` does), and segmented by the
   liver network; an ensemble of folds gives the mean of its probabilities.
   The 96 x 96 probabilities are resampled back to the image grid
   (:func:`liverlib.transforms.stage1_to_image`).
2. **Largest component.** The liver is thresholded and only its largest 3-D
   connected component is kept (``predict.largest_component``): a liver is one
   organ, and small bright blobs elsewhere (spleen, heart) are the typical false
   positives of a slice-wise network.
3. **Stage 2, lesion.** The lesion network sees the liver region of interest of
   every plane that holds predicted liver
   (:func:`liverlib.transforms.prepare_volume_stage2`, the same crop as in
   training, from the predicted instead of the reference liver), and its
   probabilities are pasted back onto the image grid
   (:func:`liverlib.transforms.stage2_to_volume`).
4. **Labels.** :func:`liverlib.inference.labels.refine_labels` turns the two probability
   volumes into labels {0, 1, 2}: with the CRF (step vii) or, with it disabled,
   by the same rule on the thresholded probabilities. A lesion is part of the
   liver (:func:`liverlib.inference.labels.lesions_in_liver`): a lesion component mostly
   outside it is clipped to it, one on its border extends it. Both versions
   come from the same probabilities, so "before"
   and "after CRF" differ by the CRF alone.
5. **Small lesions.** :func:`liverlib.inference.crossval.predict_case` and
   :func:`liverlib.inference.scan.predict_file` then drop lesion components
   under the minimum volume that the fold chose on its validation scans
   (:mod:`liverlib.inference.postprocess`).

A volume where stage 1 finds no liver gives an all-zero label volume; stage 2
and the CRF are then skipped.

Memory: a LiTS volume is 512 x 512 x 75-987 planes (up to 1 GB as float32).
Stage 1 runs on chunks of planes, so besides the image only the two
probability volumes and a few boolean masks are ever held at full size.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from liverlib import transforms
from liverlib.inference import crf
from liverlib.inference.labels import refine_labels
from liverlib.inference.models import ModelPair
from liverlib.transforms.morphology import bounding_box, largest_component

if TYPE_CHECKING:  # keras is imported only when models are loaded
    import keras

__all__ = [
    "network_input",
    "predict_slices",
    "liver_probability",
    "lesion_probability",
    "predict_probabilities",
    "labels_from_probabilities",
    "predict_volume",
]

CHUNK_PLANES = 64  # stage-1 planes preprocessed at once: ~64 MB of float32 for 512 x 512 slices

Log = Callable[[str], None]


def _quiet(message: str) -> None:
    del message


@contextlib.contextmanager
def _timed(timings: dict[str, float] | None, key: str) -> Iterator[None]:
    """Add the seconds the block takes to ``timings[key]`` (nothing when ``timings`` is None)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[key] = timings.get(key, 0.0) + (time.perf_counter() - start)


# --------------------------------------------------------------------------- networks


def network_input(gray: np.ndarray, levels: int = 256) -> np.ndarray:
    """uint8 gray levels (n, rows, columns) -> float32 network input (n, rows, columns, 1).

    The scaling of training (:class:`liverlib.data.dataset.SliceDataset`):
    ``gray * float32(1 / (levels - 1))``, so 0 -> 0.0 and ``levels - 1`` -> 1.0.
    """
    scale = np.float32(1.0 / (int(levels) - 1))
    return (np.asarray(gray).astype(np.float32) * scale)[..., None]


def predict_slices(models: Sequence["keras.Model"], x: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Mean sigmoid output of one or more networks over a stack of slices.

    Parameters
    ----------
    models : sequence of keras.Model
        Networks mapping (N, rows, columns, 1) to (N, rows, columns, 1) in [0, 1].
    x : ndarray of float32, shape (n, rows, columns, 1)
        Network input (:func:`network_input`).
    batch_size : int

    Returns
    -------
    ndarray of float32, shape (n, rows, columns)
        The mean over ``models`` of their probabilities.
    """
    if not models:
        raise ValueError("no model to predict with")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    expected = tuple(models[0].input_shape[1:])
    if tuple(x.shape[1:]) != expected:
        raise ValueError(
            f"the network takes slices of shape {expected}, got {tuple(x.shape[1:])}; "
            "is the run's preprocess.size the one the models were trained with?"
        )
    out = np.empty(x.shape[:3], np.float32)
    with _quiet_tracing():
        for start in range(0, len(x), int(batch_size)):
            batch = x[start : start + int(batch_size)]
            total = np.zeros(batch.shape[:3], np.float32)
            for model in models:
                # predict_on_batch runs a compiled predict step (traced once per model and batch
                # shape): faster than eager calls once a model has seen a few batches.
                total += np.asarray(model.predict_on_batch(batch), dtype=np.float32)[..., 0]
            out[start : start + len(batch)] = total / len(models)
    return out


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Silence TensorFlow's "retracing" warning while an ensemble predicts.

    Every model of an ensemble traces its own predict step once; TensorFlow
    warns when several traces follow each other, which is expected here.
    Plain Python logging, so nothing changes under the JAX or PyTorch backends.
    """
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# --------------------------------------------------------------------------- stage 1


def liver_probability(
    image: np.ndarray,
    liver_models: Sequence["keras.Model"],
    image_options: dict | None = None,
    batch_size: int = 32,
    chunk_planes: int = CHUNK_PLANES,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """Stage 1 on every plane: the liver probability on the image grid.

    Parameters
    ----------
    image : ndarray, shape (planes, rows, columns)
        CT in HU, canonical orientation.
    liver_models : sequence of keras.Model
        Stage-1 networks (one, or an ensemble averaged).
    image_options : dict, optional
        ``hu_window``, ``size``, ``levels``, ``equalize``
        (:func:`liverlib.transforms.image_options` of the run's config).
    batch_size : int
    chunk_planes : int
        Planes preprocessed at once. Preprocessing works slice by slice, so
        the result does not depend on it; it bounds the memory.
    timings : dict, optional
        Seconds are added to its ``network`` and ``resample`` keys.

    Returns
    -------
    ndarray of float32, image's shape, values in [0, 1]
    """
    options = dict(image_options or {})
    levels = int(options.get("levels", 256))
    prob = np.empty(image.shape, np.float32)
    for start in range(0, image.shape[0], int(chunk_planes)):
        planes = slice(start, start + int(chunk_planes))
        gray = transforms.prepare_volume_stage1(image[planes], **options)
        x = network_input(gray, levels)
        with _timed(timings, "network"):
            small = predict_slices(liver_models, x, batch_size)
        with _timed(timings, "resample"):
            back = transforms.stage1_to_image(small, image.shape[1:])
        prob[planes] = back
    return np.clip(prob, 0.0, 1.0, out=prob)  # linear resampling may overshoot 1 by float round-off


def _suppress_outside(prob: np.ndarray, kept: np.ndarray, discarded: np.ndarray, spacing: Sequence[float], margin_mm: float) -> None:
    """Zero ``prob`` on the discarded components and beyond a margin around the kept one (in place).

    The soft probabilities just around the kept liver stay, so the CRF can
    still move its boundary both ways, but a discarded component cannot come
    back, and the CRF's region stays local to the kept liver.
    """
    prob[discarded] = 0.0
    box = bounding_box(kept, margin_mm, tuple(float(s) for s in spacing))
    if box is None:
        prob[...] = 0.0
        return
    inside = np.zeros(prob.shape, dtype=bool)
    inside[box] = True
    prob[~inside] = 0.0


# --------------------------------------------------------------------------- stage 2


def lesion_probability(
    image: np.ndarray,
    liver_mask: np.ndarray,
    spacing: Sequence[float],
    lesion_models: Sequence["keras.Model"],
    image_options: dict | None = None,
    roi_margin_mm: float = 10.0,
    batch_size: int = 32,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """Stage 2 on the liver region of interest: the lesion probability on the image grid.

    Parameters
    ----------
    image : ndarray, shape (planes, rows, columns), HU
    liver_mask : ndarray of bool, image's shape
        The predicted liver; must not be empty.
    spacing : (float, float, float), mm
    lesion_models : sequence of keras.Model
    image_options : dict, optional
        As for :func:`liver_probability`.
    roi_margin_mm : float
        Padding of the liver box, as in training (``preprocess.roi_margin_mm``).
    batch_size : int
    timings : dict, optional
        Seconds are added to its ``network`` and ``resample`` (back onto the
        image grid, pasting included) keys.

    Returns
    -------
    ndarray of float32, image's shape
        The lesion probability inside the ROI of the planes with liver, 0 elsewhere.
    """
    options = dict(image_options or {})
    gray, planes, roi = transforms.prepare_volume_stage2(image, liver_mask, spacing, **options, roi_margin_mm=roi_margin_mm)
    x = network_input(gray, int(options.get("levels", 256)))
    with _timed(timings, "network"):
        small = predict_slices(lesion_models, x, batch_size)
    with _timed(timings, "resample"):
        prob = transforms.stage2_to_volume(small, planes, roi, image.shape[0])
    return np.clip(prob, 0.0, 1.0, out=prob)


# --------------------------------------------------------------------------- one volume


def _check_volume(image: np.ndarray, spacing: Sequence[float], models: Sequence[ModelPair]) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or min(image.shape) < 1:
        raise ValueError(f"expected a non-empty (planes, rows, columns) volume, got shape {image.shape}")
    if len(tuple(spacing)) != 3:
        raise ValueError(f"spacing needs 3 values (plane, row, column) in mm, got {tuple(spacing)!r}")
    if not models:
        raise ValueError("no models: give a list of (liver_model, lesion_model) pairs, e.g. load_models(run_dir)")
    return image.astype(np.float32, copy=False)


def predict_probabilities(
    image: np.ndarray,
    spacing: Sequence[float],
    models: Sequence[ModelPair],
    cfg: dict,
    log: Log | None = None,
    timings: dict[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Both stages on a volume: liver and lesion probabilities on the image grid.

    Parameters
    ----------
    image : ndarray, shape (planes, rows, columns)
        CT in HU, canonical orientation.
    spacing : (float, float, float)
        mm per voxel, (plane, row, column).
    models : sequence of (keras.Model, keras.Model)
        ``(liver, lesion)`` pairs, e.g. :func:`load_models`; the ensemble mean is used.
    cfg : dict
        The run's config (``preprocess`` and ``predict`` sections).
    log : callable, optional
        Receives one short progress line per step.
    timings : dict, optional
        A record of seconds per stage, added to the values already there (so
        one dict can sum several calls): ``stage1`` and ``stage2`` (each whole
        stage), ``network`` and ``resample`` (their parts in both stages:
        the networks, and the mapping back onto the image grid), and
        ``largest_component``. A stage that does not run adds no key.

    Returns
    -------
    liver_prob, lesion_prob : ndarray of float32, image's shape
        With ``predict.largest_component``, ``liver_prob`` is 0 on the discarded
        components and beyond ``crf.ROI_MARGIN_MM`` of the kept one's bounding
        box. ``lesion_prob`` is 0 outside the liver ROI, and everywhere when no
        liver was found (stage 2 is then skipped).
    """
    log = log or _quiet
    image = _check_volume(image, spacing, models)
    opts = transforms.image_options(cfg["preprocess"])
    predict_cfg = cfg["predict"]
    batch_size = int(predict_cfg["batch_size"])

    start = time.perf_counter()
    with _timed(timings, "stage1"):
        liver_prob = liver_probability(image, [pair[0] for pair in models], opts, batch_size, timings=timings)
    liver = liver_prob >= predict_cfg["threshold"]
    log(f"stage 1 (liver): {image.shape[0]} planes, {len(models)} model(s), {time.perf_counter() - start:.1f} s")
    if predict_cfg["largest_component"] and liver.any():
        with _timed(timings, "largest_component"):
            kept = largest_component(liver)
        discarded = liver & ~kept
        if discarded.any():
            log(f"largest component: kept {int(kept.sum())} voxels, dropped {int(discarded.sum())}")
        _suppress_outside(liver_prob, kept, discarded, spacing, crf.ROI_MARGIN_MM)
        liver = kept
        del discarded
    if not liver.any():
        log("stage 2 (lesion): skipped, no liver found")
        return liver_prob, np.zeros(image.shape, np.float32)

    start = time.perf_counter()
    with _timed(timings, "stage2"):
        lesion_prob = lesion_probability(
            image, liver, spacing, [pair[1] for pair in models], opts, cfg["preprocess"]["roi_margin_mm"], batch_size,
            timings=timings,
        )
    n_planes = int(liver.reshape(liver.shape[0], -1).any(axis=1).sum())
    log(f"stage 2 (lesion): {n_planes} planes with liver, {time.perf_counter() - start:.1f} s")
    return liver_prob, lesion_prob


def labels_from_probabilities(
    image: np.ndarray,
    liver_prob: np.ndarray,
    lesion_prob: np.ndarray,
    spacing: Sequence[float],
    cfg: dict,
    use_crf: bool = True,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """Final labels {0, 1, 2} from the two probability volumes, with or without the CRF.

    Calls :func:`liverlib.inference.labels.refine_labels` with the run's ``crf`` section;
    the CRF runs when ``use_crf`` and ``crf.enabled`` are both true, otherwise
    the same rule runs on the probabilities thresholded at
    ``predict.threshold``. Every lesion lies in the liver ({1, 2}).
    The seconds of that call are added to ``timings["crf"]`` when a dict is given.
    """
    params = dict(cfg["crf"])
    enabled = bool(params.pop("enabled", True)) and bool(use_crf)
    with _timed(timings, "crf"):
        return refine_labels(
            image, liver_prob, lesion_prob, spacing, enabled=enabled, threshold=float(cfg["predict"]["threshold"]), **params
        )


def predict_volume(
    image: np.ndarray,
    spacing: Sequence[float],
    models: Sequence[ModelPair],
    cfg: dict,
    use_crf: bool = True,
    return_probabilities: bool = False,
    log: Log | None = None,
    timings: dict[str, float] | None = None,
) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray]]:
    """Segment one CT volume with the two stages and (optionally) the 3D CRF.

    Parameters
    ----------
    image : ndarray, shape (planes, rows, columns)
        CT in HU, canonical orientation (:func:`liverlib.data.load_image`).
    spacing : (float, float, float)
        mm per voxel, (plane, row, column).
    models : sequence of (keras.Model, keras.Model)
        ``(liver, lesion)`` pairs from :func:`load_models`; several pairs are
        an ensemble (mean of the probabilities).
    cfg : dict
        The run's config (:func:`liverlib.runfolder.load_run`).
    use_crf : bool
        Refine with the 3D CRF (if the config enables it).
    return_probabilities : bool
        Also return ``{"liver_prob": ..., "lesion_prob": ...}`` (float32, image's shape).
    log : callable, optional
        Receives one short progress line per step (e.g. ``print``).
    timings : dict, optional
        A record of seconds per stage, added to the values already there:
        the keys of :func:`predict_probabilities` and ``crf``
        (:func:`labels_from_probabilities`).

    Returns
    -------
    labels : ndarray of uint8, image's shape
        0 background, 1 liver, 2 lesion (only inside the liver); all zero when
        no liver is found.
    probabilities : dict of ndarray, optional
        With ``return_probabilities=True``.
    """
    log = log or _quiet
    liver_prob, lesion_prob = predict_probabilities(image, spacing, models, cfg, log, timings=timings)
    start = time.perf_counter()
    labels = labels_from_probabilities(image, liver_prob, lesion_prob, spacing, cfg, use_crf, timings=timings)
    crf_on = use_crf and cfg["crf"]["enabled"]
    log(f"labels {'with the 3D CRF' if crf_on else 'without CRF'}: {time.perf_counter() - start:.1f} s")
    if return_probabilities:
        return labels, {"liver_prob": liver_prob, "lesion_prob": lesion_prob}
    return labels
