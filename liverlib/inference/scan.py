"""``liverlib predict IN OUT``: segment one CT (a NIfTI file or a DICOM series) with a trained run."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from liverlib import data
from liverlib.data.nifti import NIFTI_SUFFIXES
from liverlib.errors import LiverlibError
from liverlib.inference import postprocess
from liverlib.inference.models import load_model_file, model_paths, run_precision
from liverlib.inference.predictor import predict_volume
from liverlib.runfolder import PACKAGED_MANIFEST, load_run, packaged_model_dir, read_manifest
from liverlib.transforms.morphology import voxel_ml

SEG_SUFFIX = ".dcm"  # an output ending so is written as a DICOM Segmentation


def _output_kind(input: Path, output: Path, dicom_seg: bool) -> str:
    """"nifti" or "seg", checked against the input before anything is read."""
    if output.is_dir():
        raise LiverlibError("the output is a folder; give a file name ending in .nii.gz or .dcm", output)
    seg = dicom_seg or output.suffix.lower() == SEG_SUFFIX
    if seg:
        if not input.is_dir():
            raise LiverlibError("a DICOM Segmentation output needs a DICOM series folder as input "
                                "(it references the source images); write .nii.gz instead", output)
        if output.suffix.lower() != SEG_SUFFIX:
            raise LiverlibError("a DICOM Segmentation file name must end in .dcm", output)
        return "seg"
    if not output.name.endswith(NIFTI_SUFFIXES) or output.name in NIFTI_SUFFIXES:
        raise LiverlibError("the output must be a NIfTI file name ending in .nii or .nii.gz, or .dcm for DICOM SEG",
                            output)
    return "nifti"


def _read(input: Path, series_uid: str | None):
    """The CT in canonical HU, its spacing and geometry, and a line describing it."""
    if input.is_dir():
        from liverlib.data.dicom import load_dicom_series

        image, spacing, geometry = load_dicom_series(input, series_uid)
        return image, spacing, geometry, f"{input.name} (DICOM series)"
    if series_uid is not None:
        raise LiverlibError("--series picks a series of a DICOM folder; this input is a file", input)
    image, spacing, geometry = data.load_image(input)
    return image, spacing, geometry, input.name


def _packaged_run() -> Path:
    """The packaged model's folder, announced in one line with what it is and its real-CT Dice."""
    run_dir = packaged_model_dir()
    if not (run_dir / PACKAGED_MANIFEST).is_file():
        raise LiverlibError("no model is packaged in this installation; run `make model` or give --run RUN", run_dir)
    manifest = read_manifest(run_dir)
    scores = ", ".join(f"{r['scan']} {r['liver_dice']}" for r in manifest["real_ct"] if "crop" not in r["scan"])
    print(f"no --run: the packaged model ({manifest['data']}, profile {manifest['profile']}, "
          f"commit {manifest['commit']}; liver Dice on real CT: {scores or 'not measured'})", flush=True)
    return run_dir


def predict_file(
    input: str | Path,
    output: str | Path,
    run_dir: str | Path | None = None,
    fold: int | None = None,
    use_crf: bool = True,
    precision: str | None = None,
    series_uid: str | None = None,
    dicom_seg: bool = False,
) -> Path:
    """``liverlib predict IN OUT [--run RUN] [--fold K] [--no-crf] [--precision P] [--series UID] [--dicom-seg]``.

    Reads the CT in canonical orientation, segments it with the run's models
    (every fold's, averaged, or one fold's) and writes the labels {0, 1, 2}
    atomically: as NIfTI with the input's shape, affine and orientation, or,
    for a DICOM input and an output ending in ``.dcm``, as a DICOM
    Segmentation that references the source images
    (:func:`liverlib.data.dicom.save_dicom_seg`). Prints one line per step
    and the time taken.

    Parameters
    ----------
    input : str or Path
        CT volume, .nii or .nii.gz, or a folder of DICOM files
        (:func:`liverlib.data.dicom.load_dicom_series`).
    output : str or Path
        Labels to write: .nii or .nii.gz, or .dcm (DICOM Segmentation).
    run_dir : str or Path, optional
        A trained run folder (``config.yaml`` and ``models/fold-K``); default the
        model pair shipped in the package (:mod:`liverlib.training.packaged`).
    fold : int, optional
        Use this fold's models only; default all folds.
    use_crf : bool
        Apply the 3D CRF (if the run's config enables it).
    precision : {"float32", "bfloat16"}, optional
        Compute precision of the networks; default the run's ``predict.precision``.
    series_uid : str, optional
        The series to read from a DICOM folder that holds several.
    dicom_seg : bool
        Write a DICOM Segmentation (implied by an output ending in ``.dcm``).

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
    input, output = Path(input), Path(output)
    kind = _output_kind(input, output, dicom_seg)
    run_dir = _packaged_run() if run_dir is None else run_dir
    paths = model_paths(run_dir, fold)  # a wrong run is reported before anything is read
    cfg = load_run(run_dir)
    image, spacing, geometry, described = _read(input, series_uid)
    print(
        f"{described}: {'x'.join(map(str, image.shape))} (plane, row, column), "
        f"spacing {'x'.join(f'{s:.2f}' for s in spacing)} mm, stored {''.join(geometry.axcodes)}",
        flush=True,
    )
    precision = precision or run_precision(cfg)
    models = [(load_model_file(liver, precision), load_model_file(lesion, precision)) for _, liver, lesion in paths]
    folds = ", ".join(str(k) for k, _, _ in paths)
    print(f"models: run {Path(run_dir)}, fold{'s' if len(paths) > 1 else ''} {folds}, {precision}", flush=True)
    labels = predict_volume(image, spacing, models, cfg, use_crf=use_crf, log=lambda line: print(line, flush=True))
    min_ml = postprocess.validated_min_lesion_ml(run_dir, [k for k, _, _ in paths])
    if min_ml:
        labels = postprocess.remove_small_lesions(labels, spacing, min_ml)
        print(f"lesion components under {min_ml:g} mL removed (the folds' validated choice)", flush=True)
    if kind == "seg":
        from importlib.metadata import version

        from liverlib.data.dicom import save_dicom_seg

        save_dicom_seg(labels, geometry, input, output, series_uid, software_version=f"liverlib {version('liverlib')}")
        written = "DICOM Segmentation (segments Liver, Lesion)"
    else:
        data.save_like(labels, geometry, output)
        written = "NIfTI"
    counts = np.bincount(labels.ravel(), minlength=3)
    print(
        f"wrote {output} ({written}): liver {(counts[1] + counts[2]) * voxel_ml(spacing):.1f} mL, "
        f"lesion {counts[2] * voxel_ml(spacing):.1f} mL, in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return output
