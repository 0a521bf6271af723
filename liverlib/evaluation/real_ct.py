"""Real CT that no phantom-trained network has seen: liver Dice and false lesion of a run's fold ensemble.

Phantom folds measure the pipeline against itself; real scans measure what a
user gets. A folder of real scans holds, for each scan ``KEY``, a liver mask
``liver_mask_KEY.nii[.gz]`` (1 = liver) and the one CT ``ct_*_KEY.nii[.gz]``
on the same grid (``tests/data``: ``ct_abdomen_3mm`` and
``ct_abdomen_2mm_512``). The scans carry no lesion label and, as far as their
sources say, no lesion: every predicted lesion voxel is a false positive.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from liverlib import data
from liverlib.errors import DataError
from liverlib.evaluation.metrics import dice
from liverlib.inference.models import load_models, model_paths, run_precision
from liverlib.inference.postprocess import remove_small_lesions, validated_min_lesion_ml
from liverlib.inference.predictor import predict_volume
from liverlib.runfolder import RunFolder, load_run
from liverlib.transforms.morphology import bounding_box, voxel_ml

__all__ = ["COLUMNS", "CROP_MARGIN_MM", "CROP_SUFFIX", "RealScan", "find_real_scans", "score_real_ct"]

COLUMNS = ("scan", "planes", "rows", "columns", "spacing_mm", "liver_dice", "liver_ml", "reference_liver_ml",
           "false_lesion_ml", "folds", "seconds")
CROP_MARGIN_MM = 15.0  # the cropped copy of each scan: its reference liver's box grown by this
CROP_SUFFIX = "-liver-crop"
_MASK = re.compile(r"^liver_mask_(?P<key>.+?)\.nii(\.gz)?$")


@dataclass(frozen=True)
class RealScan:
    """One real CT and its liver mask."""

    name: str
    image: Path
    liver: Path


def find_real_scans(folder: str | Path) -> list[RealScan]:
    """The real scans of a folder: each ``liver_mask_KEY.nii[.gz]`` with its one ``ct_*_KEY.nii[.gz]``.

    Raises
    ------
    DataError
        If the folder does not exist, holds no mask, or a mask has no CT or several.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("no such folder of real scans", folder)
    scans = []
    for mask in sorted(folder.iterdir()):
        match = _MASK.match(mask.name)
        if not match:
            continue
        key = match.group("key")
        images = sorted(p for p in folder.iterdir() if re.match(rf"^ct_.*_{re.escape(key)}\.nii(\.gz)?$", p.name))
        if len(images) != 1:
            found = ", ".join(p.name for p in images) or "none"
            raise DataError(f"expected one CT named ct_*_{key}.nii[.gz] beside the mask, found {found}", mask)
        scans.append(RealScan(images[0].name.split(".nii")[0], images[0], mask))
    if not scans:
        raise DataError("no liver_mask_KEY.nii[.gz] with its ct_*_KEY.nii[.gz] here", folder)
    return scans


def _score_scan(name: str, shape: tuple, labels: np.ndarray, liver: np.ndarray, spacing, folds: list[int], seconds: float) -> dict:
    ml = voxel_ml(spacing)
    return {
        "scan": name,
        "planes": shape[0],
        "rows": shape[1],
        "columns": shape[2],
        "spacing_mm": " x ".join(f"{s:.2f}" for s in spacing),
        "liver_dice": round(dice(labels > 0, liver), 4),
        "liver_ml": round(float((labels > 0).sum()) * ml, 1),
        "reference_liver_ml": round(float(liver.sum()) * ml, 1),
        "false_lesion_ml": round(float((labels == 2).sum()) * ml, 2),
        "folds": ", ".join(map(str, folds)),
        "seconds": round(seconds, 1),
    }


def score_real_ct(run_dir: str | Path, folder: str | Path, fold: int | None = None, progress: bool = True,
                  crop_margin_mm: float | None = CROP_MARGIN_MM) -> pd.DataFrame:
    """Segment every real scan of ``folder`` with a run's models and score the liver.

    The scans are segmented as ``liverlib predict`` does: the fold ensemble
    (or one fold), the run's config with its CRF, and lesion components under
    the folds' validated minimum volume removed. The labels are written to
    ``RUN/predictions/real-ct/NAME.nii.gz`` in each scan's own geometry.

    Each scan is also segmented cropped to its reference liver's box grown by
    ``crop_margin_mm`` (in-plane and along z), as a scan reconstructed on a small
    field of view around the liver arrives: the row ``NAME-liver-crop``, whose
    labels are written into a volume of the whole scan's grid (0 outside the crop).

    Parameters
    ----------
    run_dir : str or Path
        A trained run folder.
    folder : str or Path
        Real scans and their liver masks (:func:`find_real_scans`).
    fold : int, optional
        One fold's models; default every fold (the ensemble).
    progress : bool
    crop_margin_mm : float or None
        Margin of the cropped copy of each scan; None scores the whole scans only.

    Returns
    -------
    DataFrame
        One row per scan and crop (:data:`COLUMNS`): the liver Dice of labels
        {1, 2} against the mask, the predicted and reference liver volumes and
        the false lesion volume (mL).
    """
    scans = find_real_scans(folder)
    paths = model_paths(run_dir, fold)
    cfg = load_run(run_dir)
    folds = [k for k, _, _ in paths]
    models = load_models(run_dir, fold, run_precision(cfg))
    min_ml = validated_min_lesion_ml(run_dir, folds)
    run = RunFolder(Path(run_dir))
    rows = []
    for scan in tqdm(scans, desc="real CT", unit="scan", disable=not progress):
        image, spacing, geometry = data.load_image(scan.image)
        liver = data.load_label(scan.liver, geometry) > 0
        boxes = {scan.name: tuple(slice(None) for _ in image.shape)}
        if crop_margin_mm is not None and liver.any():
            boxes[f"{scan.name}{CROP_SUFFIX}"] = bounding_box(liver, crop_margin_mm, spacing)
        for name, box in boxes.items():
            started = time.perf_counter()
            labels = np.zeros(image.shape, np.uint8)
            labels[box] = remove_small_lesions(predict_volume(image[box], spacing, models, cfg), spacing, min_ml)
            data.save_like(labels, geometry, run.real_ct_prediction(name))
            rows.append(_score_scan(name, image[box].shape, labels, liver, spacing, folds, time.perf_counter() - started))
    return pd.DataFrame(rows, columns=list(COLUMNS))
