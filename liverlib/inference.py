"""Whole-volume inference: the two stages, the 3D CRF, and the cross-validated predictions.

One CT volume (canonical ``(plane, row, column)`` HU, see :mod:`liverlib.data`)
goes through the paper's steps (v)-(vii):

1. **Stage 1, liver.** Every plane is preprocessed exactly as in training
   (:func:`liverlib.preprocess.prepare_volume_stage1`: HU window, resize to
   96 x 96, histogram equalization), scaled to [0, 1] as ``gray / (levels - 1)``
   (as :class:`liverlib.dataset.SliceDataset` does), and segmented by the
   liver network; an ensemble of folds gives the mean of its probabilities.
   The 96 x 96 probabilities are resampled back to the image grid
   (:func:`liverlib.preprocess.resize_back`).
2. **Largest component.** The liver is thresholded and only its largest 3-D
   connected component is kept (``predict.largest_component``): a liver is one
   organ, and small bright blobs elsewhere (spleen, heart) are the typical false
   positives of a slice-wise network.
3. **Stage 2, lesion.** The lesion network sees the liver region of interest of
   every plane that holds predicted liver
   (:func:`liverlib.preprocess.prepare_volume_stage2`, the same crop as in
   training, from the predicted instead of the reference liver), and its
   probabilities are pasted back onto the image grid
   (:func:`liverlib.preprocess.stage2_to_volume`).
4. **Labels.** :func:`liverlib.crf.refine_labels` turns the two probability
   volumes into labels {0, 1, 2}: with the CRF (step vii) or, with it disabled,
   by the same rule on the thresholded probabilities. A lesion is part of the
   liver (:func:`liverlib.crf.lesions_in_liver`): a lesion component mostly
   outside it is clipped to it, one on its border extends it. Both versions
   come from the same probabilities, so "before"
   and "after CRF" differ by the CRF alone.
5. **Small lesions.** :func:`predict_case` and :func:`predict_file` then drop
   lesion components under the minimum volume that the fold chose on its
   validation scans (:func:`choose_postprocessing`, :mod:`liverlib.postprocess`).

A volume where stage 1 finds no liver gives an all-zero label volume; stage 2
and the CRF are then skipped.

Memory: a LiTS volume is 512 x 512 x 75-987 planes (up to 1 GB as float32).
Stage 1 runs on chunks of planes, so besides the image only the two
probability volumes and a few boolean masks are ever held at full size.

Cross-validation: :func:`predict_cases` predicts every test scan of every fold
with that fold's models only, so no scan is ever segmented by a network that
saw it in training.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from liverlib import crf, data, postprocess, preprocess
from liverlib.atomic import atomic_path
from liverlib.errors import LiverlibError
from liverlib.metrics import connected_components
from liverlib.runfolder import RunFolder, load_run

if TYPE_CHECKING:  # keras is imported only when models are loaded
    import keras

__all__ = [
    "ModelPair",
    "model_paths",
    "load_models",
    "network_input",
    "predict_slices",
    "liver_probability",
    "largest_component",
    "lesion_probability",
    "predict_probabilities",
    "labels_from_probabilities",
    "predict_volume",
    "predict_file",
    "prediction_paths",
    "prediction_complete",
    "predict_case",
    "predict_cases",
    "choose_postprocessing",
    "read_timing",
    "score_before_after",
    "crf_effect",
    "most_changed_case",
    "load_before_after",
]

STAGES = ("liver", "lesion")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
CHUNK_PLANES = 64  # stage-1 planes preprocessed at once: ~64 MB of float32 for 512 x 512 slices
_FOLD_DIR = re.compile(r"^fold-(\d+)$")

ModelPair = tuple["keras.Model", "keras.Model"]
Log = Callable[[str], None]


def _quiet(message: str) -> None:
    del message


# --------------------------------------------------------------------------- models


def model_paths(run_dir: str | Path, fold: int | None = None) -> list[tuple[int, Path, Path]]:
    """The trained model files of a run: ``(fold, liver.keras, lesion.keras)`` per fold.

    Only checks that the files exist (no Keras import), so a wrong run folder
    is reported at once.

    Parameters
    ----------
    run_dir : str or Path
    fold : int, optional
        One fold; default every fold under ``RUN/models`` (an ensemble).

    Raises
    ------
    LiverlibError
        If the run folder does not exist, holds no trained model, lacks the
        requested fold, or a fold lacks one of its two models.
    """
    run = RunFolder(Path(run_dir))
    if not run.root.is_dir():
        raise LiverlibError("no such run folder", run.root)
    models_dir = run.root / "models"
    found = []
    if models_dir.is_dir():
        found = sorted(int(m.group(1)) for p in models_dir.iterdir() if p.is_dir() and (m := _FOLD_DIR.match(p.name)))
    if not found:
        raise LiverlibError("no trained models here; run `liverlib run` first", models_dir)
    if fold is not None:
        if int(fold) not in found:
            raise LiverlibError(f"no fold {fold} here (trained folds: {', '.join(map(str, found))})", models_dir)
        found = [int(fold)]
    out = []
    for k in found:
        liver, lesion = (run.model_dir(k) / f"{stage}.keras" for stage in STAGES)
        for path in (liver, lesion):
            if not path.is_file():
                raise LiverlibError(
                    f"fold {k} has no {path.stem} model (training incomplete?); finish it with `liverlib run` "
                    "or choose a complete fold with --fold",
                    path,
                )
        out.append((k, liver, lesion))
    return out


def _precision(cfg: dict) -> str:
    """The run's ``predict.precision``; float32 for runs made before the key existed."""
    return cfg["predict"].get("precision", "float32")


def _load(path: Path, precision: str = "float32"):
    from liverlib.model import inference_copy, load_model

    try:
        return inference_copy(load_model(path, compile=False), precision)  # inference only: no optimizer state
    except Exception as exc:  # a truncated or foreign .keras file raises many types
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise LiverlibError(f"cannot load this model ({type(exc).__name__}: {reason})", path) from None


def load_models(run_dir: str | Path, fold: int | None = None, precision: str = "float32") -> list[ModelPair]:
    """Load the trained ``(liver, lesion)`` model pairs of a run.

    Parameters
    ----------
    run_dir : str or Path
        A run folder with ``models/fold-K/liver.keras`` and ``lesion.keras``.
    fold : int, optional
        Load one fold; default every fold (their mean is the ensemble's prediction).
    precision : {"float32", "bfloat16"}
        Compute precision of the loaded networks (:func:`liverlib.model.inference_copy`).

    Returns
    -------
    list of (keras.Model, keras.Model)
        One ``(liver_model, lesion_model)`` pair per fold, sorted by fold.

    Raises
    ------
    LiverlibError
        See :func:`model_paths`; also for a model file that cannot be loaded.
    """
    return [(_load(liver, precision), _load(lesion, precision)) for _, liver, lesion in model_paths(run_dir, fold)]


# --------------------------------------------------------------------------- networks


def network_input(gray: np.ndarray, levels: int = 256) -> np.ndarray:
    """uint8 gray levels (n, rows, columns) -> float32 network input (n, rows, columns, 1).

    The scaling of training (:class:`liverlib.dataset.SliceDataset`):
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
        (:func:`liverlib.preprocess.image_options` of the run's config).
    batch_size : int
    chunk_planes : int
        Planes preprocessed at once. Preprocessing works slice by slice, so
        the result does not depend on it; it bounds the memory.

    Returns
    -------
    ndarray of float32, image's shape, values in [0, 1]
    """
    options = dict(image_options or {})
    levels = int(options.get("levels", 256))
    prob = np.empty(image.shape, np.float32)
    for start in range(0, image.shape[0], int(chunk_planes)):
        planes = slice(start, start + int(chunk_planes))
        gray = preprocess.prepare_volume_stage1(image[planes], **options)
        small = predict_slices(liver_models, network_input(gray, levels), batch_size)
        prob[planes] = preprocess.resize_back(small, image.shape[1:])
    return np.clip(prob, 0.0, 1.0, out=prob)  # linear resampling may overshoot 1 by float round-off


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 3-D connected component of a mask (full 26-connectivity, as
    :func:`liverlib.data.count_lesions`: a liver tip that touches the next plane
    only diagonally on thick slices still counts as connected).

    Labelling runs on the mask's bounding box only, so a small liver in a
    512 x 512 x 900 volume costs little. An empty mask gives an empty mask; of
    equally large components the first in scan order is kept.
    """
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros(mask.shape, dtype=bool)
    box = crf.bounding_box(mask, (1.0,) * mask.ndim)
    if box is None:
        return out
    labels, sizes = connected_components(mask[box])
    out[box] = labels == (1 + int(np.argmax(sizes[1:])))
    return out


def _suppress_outside(prob: np.ndarray, kept: np.ndarray, discarded: np.ndarray, spacing: Sequence[float], margin_mm: float) -> None:
    """Zero ``prob`` on the discarded components and beyond a margin around the kept one (in place).

    The soft probabilities just around the kept liver stay, so the CRF can
    still move its boundary both ways, but a discarded component cannot come
    back, and the CRF's region stays local to the kept liver.
    """
    prob[discarded] = 0.0
    box = crf.bounding_box(kept, tuple(float(s) for s in spacing), margin_mm)
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

    Returns
    -------
    ndarray of float32, image's shape
        The lesion probability inside the ROI of the planes with liver, 0 elsewhere.
    """
    options = dict(image_options or {})
    gray, planes, roi = preprocess.prepare_volume_stage2(image, liver_mask, spacing, **options, roi_margin_mm=roi_margin_mm)
    small = predict_slices(lesion_models, network_input(gray, int(options.get("levels", 256))), batch_size)
    prob = preprocess.stage2_to_volume(small, planes, roi, image.shape[0])
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
    opts = preprocess.image_options(cfg["preprocess"])
    predict_cfg = cfg["predict"]
    batch_size = int(predict_cfg["batch_size"])

    start = time.perf_counter()
    liver_prob = liver_probability(image, [pair[0] for pair in models], opts, batch_size)
    liver = liver_prob >= predict_cfg["threshold"]
    log(f"stage 1 (liver): {image.shape[0]} planes, {len(models)} model(s), {time.perf_counter() - start:.1f} s")
    if predict_cfg["largest_component"] and liver.any():
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
    lesion_prob = lesion_probability(
        image, liver, spacing, [pair[1] for pair in models], opts, cfg["preprocess"]["roi_margin_mm"], batch_size
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
) -> np.ndarray:
    """Final labels {0, 1, 2} from the two probability volumes, with or without the CRF.

    Calls :func:`liverlib.crf.refine_labels` with the run's ``crf`` section;
    the CRF runs when ``use_crf`` and ``crf.enabled`` are both true, otherwise
    the same rule runs on the probabilities thresholded at
    ``predict.threshold``. Every lesion lies in the liver ({1, 2}).
    """
    params = dict(cfg["crf"])
    enabled = bool(params.pop("enabled", True)) and bool(use_crf)
    return crf.refine_labels(
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

    Returns
    -------
    labels : ndarray of uint8, image's shape
        0 background, 1 liver, 2 lesion (only inside the liver); all zero when
        no liver is found.
    probabilities : dict of ndarray, optional
        With ``return_probabilities=True``.
    """
    log = log or _quiet
    liver_prob, lesion_prob = predict_probabilities(image, spacing, models, cfg, log)
    start = time.perf_counter()
    labels = labels_from_probabilities(image, liver_prob, lesion_prob, spacing, cfg, use_crf)
    crf_on = use_crf and cfg["crf"]["enabled"]
    log(f"labels {'with the 3D CRF' if crf_on else 'without CRF'}: {time.perf_counter() - start:.1f} s")
    if return_probabilities:
        return labels, {"liver_prob": liver_prob, "lesion_prob": lesion_prob}
    return labels


def _check_output_name(output: Path) -> None:
    if not output.name.endswith(NIFTI_SUFFIXES) or output.name in NIFTI_SUFFIXES:
        raise LiverlibError("the output must be a NIfTI file name ending in .nii or .nii.gz", output)
    if output.is_dir():
        raise LiverlibError("the output is a folder; give a file name ending in .nii or .nii.gz", output)


def predict_file(
    input: str | Path,
    output: str | Path,
    run_dir: str | Path,
    fold: int | None = None,
    use_crf: bool = True,
    precision: str | None = None,
) -> Path:
    """``liverlib predict IN OUT --run RUN [--fold K] [--no-crf] [--precision P]``: segment one CT file.

    Reads the CT in canonical orientation, segments it with the run's models
    (every fold's, averaged, or one fold's) and writes the labels {0, 1, 2}
    with the input's shape, affine and orientation, atomically. Prints one
    line per step and the time taken.

    Parameters
    ----------
    input : str or Path
        CT volume, .nii or .nii.gz.
    output : str or Path
        Label volume to write, .nii or .nii.gz.
    run_dir : str or Path
        A trained run folder (``config.yaml`` and ``models/fold-K``).
    fold : int, optional
        Use this fold's models only; default all folds.
    use_crf : bool
        Apply the 3D CRF (if the run's config enables it).
    precision : {"float32", "bfloat16"}, optional
        Compute precision of the networks; default the run's ``predict.precision``.

    Returns
    -------
    Path
        ``output``.

    Raises
    ------
    LiverlibError
        A missing run or model, a bad output name; ``DataError`` (a subclass)
        for an unreadable input.
    """
    started = time.perf_counter()
    output = Path(output)
    _check_output_name(output)
    paths = model_paths(run_dir, fold)  # a wrong run is reported before anything is read
    cfg = load_run(run_dir)
    image, spacing, geometry = data.load_image(input)
    print(
        f"{Path(input).name}: {'x'.join(map(str, image.shape))} (plane, row, column), "
        f"spacing {'x'.join(f'{s:.2f}' for s in spacing)} mm, stored {''.join(geometry.axcodes)}",
        flush=True,
    )
    precision = precision or _precision(cfg)
    models = [(_load(liver, precision), _load(lesion, precision)) for _, liver, lesion in paths]
    folds = ", ".join(str(k) for k, _, _ in paths)
    print(f"models: run {Path(run_dir)}, fold{'s' if len(paths) > 1 else ''} {folds}, {precision}", flush=True)
    labels = predict_volume(image, spacing, models, cfg, use_crf=use_crf, log=lambda line: print(line, flush=True))
    chosen = [c for c in (postprocess.read_min_lesion_ml(run_dir, k) for k, _, _ in paths) if c is not None]
    min_ml = float(np.median(chosen)) if chosen else 0.0
    if min_ml:
        labels = postprocess.remove_small_lesions(labels, spacing, min_ml)
        print(f"lesion components under {min_ml:g} mL removed (the folds' validated choice)", flush=True)
    data.save_like(labels, geometry, output)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = np.bincount(labels.ravel(), minlength=3)
    print(
        f"wrote {output}: liver {(counts[1] + counts[2]) * voxel_ml:.1f} mL, lesion {counts[2] * voxel_ml:.1f} mL, "
        f"in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return output


# --------------------------------------------------------------------------- cross-validated predictions


@dataclass(frozen=True)
class PredictionPaths:
    """Where one case's predictions live in a run folder."""

    before: Path
    after: Path


def prediction_paths(run_dir: str | Path, case_id: int) -> PredictionPaths:
    """``RUN/predictions/{before,after}-crf/segmentation-N.nii.gz`` of one case."""
    from liverlib.evaluate import prediction_path

    return PredictionPaths(prediction_path(run_dir, case_id, 0), prediction_path(run_dir, case_id, 1))


def prediction_complete(run_dir: str | Path, case_id: int) -> bool:
    """True when both of a case's prediction files exist (they are written atomically)."""
    paths = prediction_paths(run_dir, case_id)
    return paths.before.is_file() and paths.after.is_file()


def predict_case(files: data.CaseFiles, models: Sequence[ModelPair], cfg: dict, run_dir: str | Path, fold: int = -1,
                 min_lesion_ml: float = 0.0) -> dict:
    """Predict one case before and after the CRF, from one pass of the networks, and save both.

    The probabilities are computed once; :func:`labels_from_probabilities`
    derives the labels without and with the CRF, and both lose their lesion
    components under ``min_lesion_ml`` (:func:`liverlib.postprocess.remove_small_lesions`).
    Both are written with the case's stored geometry, so
    ``liverlib evaluate RUN/predictions/after-crf DATA`` compares them with the
    references directly.

    Returns
    -------
    dict
        One row of the timing table: ``fold``, ``case``, ``planes``, ``rows``,
        ``columns``, ``network_s`` (both stages), ``crf_s`` (labels with the
        CRF), ``total_s`` (reading and writing included).
    """
    started = time.perf_counter()
    image, spacing, geometry = data.load_image(files.image)
    t0 = time.perf_counter()
    liver_prob, lesion_prob = predict_probabilities(image, spacing, models, cfg)
    t1 = time.perf_counter()
    before = labels_from_probabilities(image, liver_prob, lesion_prob, spacing, cfg, use_crf=False)
    t2 = time.perf_counter()
    after = labels_from_probabilities(image, liver_prob, lesion_prob, spacing, cfg, use_crf=True)
    t3 = time.perf_counter()
    before, after = (postprocess.remove_small_lesions(x, spacing, min_lesion_ml) for x in (before, after))
    paths = prediction_paths(run_dir, files.case_id)
    data.save_like(before, geometry, paths.before)
    data.save_like(after, geometry, paths.after)  # written last: its presence marks the case complete
    planes, rows, columns = image.shape
    return {
        "fold": int(fold),
        "case": int(files.case_id),
        "planes": planes,
        "rows": rows,
        "columns": columns,
        "network_s": round(t1 - t0, 3),
        "crf_s": round(t3 - t2, 3),
        "total_s": round(time.perf_counter() - started, 3),
    }


def _timing_path(run_dir: str | Path) -> Path:
    return RunFolder(Path(run_dir)).predictions / "timing.csv"


def read_timing(run_dir: str | Path) -> pd.DataFrame:
    """``RUN/predictions/timing.csv``: seconds per case (empty table if none yet)."""
    path = _timing_path(run_dir)
    if path.is_file():
        return pd.read_csv(path)
    return pd.DataFrame(columns=["fold", "case", "planes", "rows", "columns", "network_s", "crf_s", "total_s"])


def _write_timing(run_dir: str | Path, table: pd.DataFrame) -> None:
    with atomic_path(_timing_path(run_dir)) as tmp:
        table.to_csv(tmp, index=False)


def _test_cases(run_dir: str | Path, cases: Sequence[data.CaseFiles], folds) -> list[tuple[dict, list[data.CaseFiles]]]:
    """Each selected fold of ``splits.json`` with the CaseFiles of its test scans."""
    from liverlib.splits import read_splits
    from liverlib.train import select_folds

    by_id = {c.case_id: c for c in cases}
    out = []
    for fold in select_folds(read_splits(RunFolder(Path(run_dir)).splits), folds):
        missing = [c for c in fold["test"] if c not in by_id]
        if missing:
            raise ValueError(f"fold {fold['fold']} tests cases {missing} that are not among the given cases")
        out.append((fold, [by_id[c] for c in fold["test"]]))
    return out


def predict_cases(
    run_dir: str | Path,
    cases: Sequence[data.CaseFiles],
    folds: str | int | list[int] = "all",
    cfg: dict | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Predict every test scan of every fold with that fold's models, before and after the CRF.

    Writes ``RUN/predictions/before-crf/segmentation-N.nii.gz`` and
    ``RUN/predictions/after-crf/segmentation-N.nii.gz`` for each test case of
    each selected fold, using only the models of the fold that tested it (no
    scan is segmented by a network that trained on it), and records the seconds
    spent per case in ``RUN/predictions/timing.csv``. Cases whose two files
    exist are skipped, so an interrupted run resumes; a fold's models are
    loaded only if one of its cases is left to do. Before its test scans, a
    fold chooses its minimum lesion volume on its validation scans
    (:func:`choose_postprocessing`).

    Parameters
    ----------
    run_dir : str or Path
        A run folder with ``splits.json``, ``config.yaml`` and trained models.
    cases : sequence of CaseFiles
        The run's cases (:func:`liverlib.runfolder.dataset_cases`).
    folds : "all", int or list of int
        The folds to predict.
    cfg : dict, optional
        The run's config; default read from ``config.yaml``.
    progress : bool
        Show a progress bar over cases.

    Returns
    -------
    DataFrame
        The timing table (every case predicted so far, this call's and earlier ones).
    """
    from tqdm.auto import tqdm

    cfg = load_run(run_dir) if cfg is None else cfg
    plan = _test_cases(run_dir, cases, folds)
    todo = [(fold, files) for fold, test in plan for files in test if not prediction_complete(run_dir, files.case_id)]
    timing = read_timing(run_dir)
    bar = tqdm(total=len(todo), desc="predict", unit="case", disable=not progress)
    for fold, test in plan:
        pending = [files for files in test if not prediction_complete(run_dir, files.case_id)]
        if not pending:
            continue
        models = load_models(run_dir, fold["fold"], _precision(cfg))
        min_ml = choose_postprocessing(run_dir, fold, cases, models, cfg)
        for files in pending:
            row = predict_case(files, models, cfg, run_dir, fold["fold"], min_ml)
            timing = pd.concat([timing[timing["case"] != row["case"]], pd.DataFrame([row])], ignore_index=True)
            _write_timing(run_dir, timing.sort_values(["fold", "case"]))
            bar.update(1)
        del models
        _clear_keras_session()
    bar.close()
    return read_timing(run_dir)


def choose_postprocessing(run_dir: str | Path, fold: dict, cases: Sequence[data.CaseFiles], models: Sequence[ModelPair],
                          cfg: dict) -> float:
    """A fold's minimum lesion volume (mL), chosen once on its validation scans and recorded.

    With a single candidate in ``predict.min_lesion_ml`` that candidate is
    used and nothing is predicted. Otherwise the fold's ``val`` scans are
    segmented (with the CRF, as the final labels are) by the fold's own models
    and :func:`liverlib.postprocess.choose_min_lesion_ml` picks the candidate;
    the choice goes to ``models/fold-K/postprocessing.json`` and is read back on
    a rerun. The test scans play no part.
    """
    candidates = [float(c) for c in cfg["predict"].get("min_lesion_ml", [0.0])]
    if len(candidates) == 1:
        return candidates[0]
    chosen = postprocess.read_min_lesion_ml(run_dir, fold["fold"])
    if chosen is not None:
        return chosen
    by_id = {files.case_id: files for files in cases}
    val = [by_id[c] for c in fold.get("val", []) if c in by_id]
    predictions = []
    for files in val:
        case = data.load_case(files)
        labels = predict_volume(case.image, case.spacing, models, cfg)
        predictions.append((labels, case.label, case.spacing))
    best, scores = postprocess.choose_min_lesion_ml(predictions, candidates)
    postprocess.write_choice(run_dir, fold["fold"], best, scores, [files.case_id for files in val])
    return best


def _clear_keras_session() -> None:
    """Free the previous fold's models before the next ones are loaded."""
    import keras

    keras.backend.clear_session()


# --------------------------------------------------------------------------- the CRF's effect


def score_before_after(
    run_dir: str | Path,
    cases: Sequence[data.CaseFiles],
    folds: str | int | list[int] = "all",
    out: str | Path | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Score every test case's predictions before and after the CRF against its reference.

    Each prediction is scored by :func:`liverlib.evaluate.score_pair` (the
    LiTS metrics of :func:`liverlib.metrics.case_metrics`, both volumes read in
    canonical orientation), exactly as ``liverlib evaluate`` does.

    Parameters
    ----------
    run_dir : str or Path
    cases : sequence of CaseFiles
        The run's cases, with their reference segmentations.
    folds : "all", int or list of int
    out : str or Path, optional
        Also write the table there as CSV (full precision), atomically.
    progress : bool

    Returns
    -------
    DataFrame
        Long format, as ``tables/metrics.csv``: ``fold``, ``crf`` (0 before,
        1 after), ``case``, ``structure`` (liver = labels {1, 2}, lesion =
        label 2), ``dice``, ``voe``, ``rvd``, ``assd``, ``msd``, the Dice
        counts and the lesion detection counts.

    Raises
    ------
    LiverlibError
        If a test case has not been predicted yet (run :func:`predict_cases`).
    """
    from tqdm.auto import tqdm

    from liverlib.evaluate import score_pair, to_frame

    rows = []
    plan = [(fold, files) for fold, test in _test_cases(run_dir, cases, folds) for files in test]
    for fold, files in tqdm(plan, desc="score", unit="case", disable=not progress):
        if files.label is None:
            raise ValueError(f"case {files.case_id} has no reference segmentation to score against")
        paths = prediction_paths(run_dir, files.case_id)
        for crf_flag, path in ((0, paths.before), (1, paths.after)):
            if not path.is_file():
                raise LiverlibError("no prediction yet; run predict_cases first", path)
            for row in score_pair(files.case_id, path, files.label):
                rows.append({"fold": int(fold["fold"]), "crf": crf_flag, **row})
    table = to_frame(rows)
    if out is not None:
        with atomic_path(out) as tmp:
            table.to_csv(tmp, index=False)
    return table


def crf_effect(scores: pd.DataFrame, decimals: int | None = 4) -> pd.DataFrame:
    """The CRF's effect per structure: Dice and ASSD before and after, side by side.

    Parameters
    ----------
    scores : DataFrame
        :func:`score_before_after`'s table.
    decimals : int, optional
        Round the scores to this many decimals (for the written tables); None keeps all.

    Returns
    -------
    DataFrame, one row per structure (liver, lesion)
        ``cases``; ``dice_before``, ``dice_after``, ``dice_change`` (mean of
        the per-case Dice); ``global_dice_before``, ``global_dice_after``
        (2·Σ|X∩Y| / Σ(|X|+|Y|)); ``assd_before``, ``assd_after`` (mm, mean over
        the cases where it is defined); ``cases_improved``, ``cases_worse``
        (per-case Dice up or down by more than 0.001).
    """
    from liverlib.evaluate import summarize

    summary = summarize(scores, by=["crf"])
    wide = summary.pivot(index="structure", columns="crf")
    per_case = scores.pivot_table(index=["structure", "case"], columns="crf", values="dice")
    change = per_case[1] - per_case[0]
    out = pd.DataFrame(
        {
            "cases": wide[("cases", 0)].astype(int),
            "dice_before": wide[("dice_per_case", 0)],
            "dice_after": wide[("dice_per_case", 1)],
            "dice_change": wide[("dice_per_case", 1)] - wide[("dice_per_case", 0)],
            "global_dice_before": wide[("dice_global", 0)],
            "global_dice_after": wide[("dice_global", 1)],
            "assd_before": wide[("assd", 0)],
            "assd_after": wide[("assd", 1)],
            "cases_improved": (change > 1e-3).groupby(level="structure").sum().astype(int),
            "cases_worse": (change < -1e-3).groupby(level="structure").sum().astype(int),
        }
    )
    order = [s for s in ("liver", "lesion") if s in out.index]
    out = out.loc[order].rename_axis("structure").reset_index()
    return out if decimals is None else out.round(decimals)


def most_changed_case(scores: pd.DataFrame) -> int:
    """The case whose Dice the CRF changed most (liver and lesion together), for a figure.

    Cases without lesion in the reference count only by their liver, since
    their lesion Dice jumps between 0 and 1 for a single voxel.
    """
    per_case = scores.pivot_table(index=["case", "structure"], columns="crf", values="dice")
    change = (per_case[1] - per_case[0]).abs().unstack("structure")
    ref_lesion = scores[(scores["structure"] == "lesion") & (scores["crf"] == 0)].set_index("case")["ref_empty"]
    if "lesion" in change:
        change.loc[ref_lesion[ref_lesion.astype(bool)].index, "lesion"] = 0.0
    total = change.fillna(0).sum(axis=1)
    return int(total.idxmax())


def load_before_after(run_dir: str | Path, files: data.CaseFiles) -> dict[str, np.ndarray]:
    """One case's image, reference and both predictions, canonical, for figures.

    Returns
    -------
    dict
        ``image`` (HU), ``reference``, ``before``, ``after`` (uint8 labels),
        ``spacing`` and ``case_id``.
    """
    case = data.load_case(files)
    paths = prediction_paths(run_dir, files.case_id)
    return {
        "image": case.image,
        "reference": case.label,
        "before": data.load_label(paths.before, case.geometry),
        "after": data.load_label(paths.after, case.geometry),
        "spacing": case.spacing,
        "case_id": case.case_id,
    }
