"""``liverlib predict IN OUT``: segment one CT file with a trained run."""

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
from liverlib.runfolder import load_run
from liverlib.transforms.morphology import voxel_ml


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
    precision = precision or run_precision(cfg)
    models = [(load_model_file(liver, precision), load_model_file(lesion, precision)) for _, liver, lesion in paths]
    folds = ", ".join(str(k) for k, _, _ in paths)
    print(f"models: run {Path(run_dir)}, fold{'s' if len(paths) > 1 else ''} {folds}, {precision}", flush=True)
    labels = predict_volume(image, spacing, models, cfg, use_crf=use_crf, log=lambda line: print(line, flush=True))
    min_ml = postprocess.validated_min_lesion_ml(run_dir, [k for k, _, _ in paths])
    if min_ml:
        labels = postprocess.remove_small_lesions(labels, spacing, min_ml)
        print(f"lesion components under {min_ml:g} mL removed (the folds' validated choice)", flush=True)
    data.save_like(labels, geometry, output)
    counts = np.bincount(labels.ravel(), minlength=3)
    print(
        f"wrote {output}: liver {(counts[1] + counts[2]) * voxel_ml(spacing):.1f} mL, lesion {counts[2] * voxel_ml(spacing):.1f} mL, "
        f"in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return output
