"""Phantom cases and cohorts: :func:`make_phantom` renders one case, :func:`write_cohort` writes many as NIfTI."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from liverlib.atomic import atomic_path
from liverlib.data import CaseFiles, Geometry, load_case
from liverlib.data.phantoms.anatomy import _Anatomy, _fit_liver
from liverlib.data.phantoms.canvas import _Canvas
from liverlib.data.phantoms.lesions import _sample_lesions
from liverlib.data.phantoms.render import _render
from liverlib.data.phantoms.scanner import (
    _affine,
    _apply_scanner,
    _draw_scan,
    _render_grid,
    _Scan,
    lits_geometry,
)
from liverlib.data.phantoms.shapes import _Field, _upsample
from liverlib.data.phantoms.tissues import _GAS_HU, TISSUES
from liverlib.errors import DataError
from liverlib.transforms.morphology import voxel_ml

# Bumped whenever the same (seed, case, size) renders differently: names the cached cohorts and tags the files.
GENERATOR_VERSION = 2


@dataclass
class Phantom:
    """One synthetic CT case in canonical orientation.

    Attributes
    ----------
    case_id : int
    image : ndarray of float32, (plane, row, column)
        Integer-valued HU, noise and blur included, padding outside the field.
    label : ndarray of uint8
        0 = background, 1 = liver, 2 = lesion.
    tissues : ndarray of uint8
        Tissue class of each voxel, see :data:`TISSUES`.
    spacing : tuple of float
        Voxel size in mm, (plane, row, column).
    axcodes : tuple of str
        Orientation the case is stored in by :func:`write_case`.
    meta : dict
        Scanner and anatomy facts: ``seed``, ``size``, ``n_slices`` (the argument),
        ``phase`` (one of :data:`PHASES`), ``noise_sigma`` (HU, standard deviation
        of the noise), ``noise_corr_px`` (in-plane correlation of the noise, Gaussian
        sigma in pixels), ``noise_bandpass`` (share of the noise's lowest frequencies
        removed), ``psf_mm`` (the image's in-plane blur, Gaussian sigma),
        ``thickness_mm`` (slice thickness, FWHM of the z profile), ``padding`` (value
        outside the circular field, or None), ``fov_mm``, ``crop`` (an image cropped
        around the liver), ``body_cut`` (a field narrower than the body),
        ``enhancement`` (the case's contrast factor on enhancement, 1 unenhanced),
        ``steatosis`` (fatty liver), ``streaks`` (number of streak artefacts),
        ``cupping_hu`` and ``dark_band_hu`` (beam hardening, 0: none), ``bias_hu``
        (peak of the smooth additive bias field, 0: none), ``rescale_intercept``
        (0 or -1024, used when written), ``oral_contrast``, ``origin`` (table height
        and body offsets, mm),
        ``liver_ml`` (labels 1 + 2), ``n_lesions``, ``lesions`` (one dict per
        lesion: kind "hypo", "hyper", "washout", "cyst" or "calcified", site
        "deep", "subcapsular" or "cluster", cluster (its group or None),
        diameter_mm, delta_hu to the liver, necrosis, rim, capsule,
        calcification (None, "foci" or "coarse"), margin_mm, centre_voxel in
        canonical (plane, row, column)), ``anatomy`` (liver_shape "normal",
        "cirrhotic", "large" or "resected", resection, ascites_mm, stomach and
        duodenum filling, bowel_thickening, gallbladder, masses outside the
        liver), ``parenchyma`` (the liver's texture, fat, sparing, perfusion and
        vessel contrast) and ``hu`` (the nominal HU drawn for each tissue, and
        ``liver_texture``: the HU amplitude of the liver's texture).
    """

    case_id: int
    image: np.ndarray
    label: np.ndarray
    tissues: np.ndarray
    spacing: tuple[float, float, float]
    axcodes: tuple[str, str, str]
    meta: dict = field(default_factory=dict)


def make_phantom(case_id: int, seed: int = 7, size: int = 256, n_slices: int | None = None,
                 geometry: str | tuple[int, float] | None = None) -> Phantom:
    """Render one synthetic abdominal CT case.

    Parameters
    ----------
    case_id : int
        Case number; with ``seed`` it fixes the whole case.
    seed : int
        Cohort seed.
    size : int
        In-plane pixels (rows = columns = size), at least 64.
    n_slices : int, optional
        Number of axial planes. By default a slice spacing of 0.7-5 mm is drawn
        that gives 40-200 planes over the scanned range.
    geometry : {None, "lits"} or (planes, spacing_mm), optional
        None: the cohort's scanner, with crops to the liver and 40-200 planes.
        ``"lits"``: LiTS's geometry, drawn per case from its own generator
        (:func:`~liverlib.data.phantoms.scanner.lits_geometry`: 74-987 planes
        0.7-5 mm apart, pixels of 0.55-1 mm when ``size`` is 512, no crops).
        A tuple fixes the planes and their spacing, otherwise as ``"lits"``.
        ``n_slices`` is then ignored.

    Returns
    -------
    Phantom
    """
    if size < 64:
        raise ValueError(f"size must be at least 64 pixels, got {size}")
    if n_slices is not None and n_slices < 8:
        raise ValueError(f"n_slices must be at least 8, got {n_slices}")
    if case_id < 0:
        raise ValueError(f"case_id must be >= 0, got {case_id}")
    # independent generators, so that a case does not depend on size, n_slices or the other cases
    rng_anat, rng_scan, rng_lesion, rng_noise, rng_geometry = (
        np.random.default_rng(s) for s in np.random.SeedSequence([int(seed), int(case_id)]).spawn(5)
    )  # (spawned children depend on their index only: the first four are those of the cohort before geometry)
    lits = _lits_planes(geometry, rng_geometry)
    anat, scale, fields, coarse = _sample_patient(rng_anat)
    scan = _draw_scan(rng_scan, anat, scale, coarse, size, n_slices, lits)
    _add_fields(fields, rng_anat, scan)
    lesions_spec = _sample_lesions(rng_lesion, anat, coarse, scan.dz, scan.phase, scale)
    img, tis, facts, f_z = _render_volume(anat, fields, scan, scale, lesions_spec, size)
    img = _apply_scanner(img, tis, scan, f_z, rng_noise)
    label = np.zeros(img.shape, np.uint8)
    label[(tis == TISSUES["liver"]) | (tis == TISSUES["liver_vessel"])] = 1
    label[tis == TISSUES["lesion"]] = 2
    spacing = (float(scan.dz), float(scan.px), float(scan.px))
    meta = _meta(scan, scale, facts, label, spacing, seed, size, n_slices)
    meta["geometry"] = None if geometry is None else "lits" if geometry == "lits" else [lits[0], lits[1]]
    return Phantom(int(case_id), img, label, tis, spacing, scan.axcodes, meta)


def _lits_planes(geometry, rng) -> tuple[int, float] | None:
    if geometry is None:
        return None
    if geometry == "lits":
        return lits_geometry(rng)
    if isinstance(geometry, str) or len(geometry) != 2 or int(geometry[0]) < 8 or not 0.1 <= float(geometry[1]) <= 10:
        raise ValueError(f"geometry must be None, 'lits' or (planes >= 8, spacing_mm in [0.1, 10]), got {geometry!r}")
    return int(geometry[0]), float(geometry[1])


def _sample_patient(rng) -> tuple[_Anatomy, np.ndarray, dict, tuple]:
    """The anatomy, its per-axis scale (z, y, x), the liver's shape field, and the liver fitted to a volume.

    Returns
    -------
    anatomy, scale, fields (``"shape"`` only so far), coarse liver grid (z, y, x, sdf)
    """
    anat = _Anatomy(rng)
    scale = np.array([rng.uniform(0.9, 1.1), 1.0, rng.uniform(0.9, 1.1)])  # (z, y, x)
    scale[1] = scale[2] * rng.uniform(0.92, 1.06)
    lo_f, hi_f = np.array([-420.0, -260.0, -300.0]), np.array([220.0, 260.0, 300.0])
    fields = {"shape": _Field(rng, lo_f, hi_f, 22.0)}
    target_ml = anat.liver_shape.target_ml(rng)  # by the liver's shape: normal, cirrhotic, large, resected
    _, coarse = _fit_liver(anat, fields, scale, target_ml)
    return anat, scale, fields, coarse


def _add_fields(fields: dict, rng, scan: _Scan) -> None:
    """Smooth random fields over the scanned range: textures, stool gas, lung vessels, fat strands."""
    lo_f = np.array([scan.z_bot - 20.0, -220.0, -220.0])
    hi_f = np.array([scan.z_top + 20.0, 220.0, 220.0])
    for name, cell in (("texture", 9.0), ("fine", 4.0), ("lung", 11.0), ("lung2", 11.0), ("strands", 7.0)):
        fields[name] = _Field(rng, lo_f, hi_f, cell)


def _render_volume(anat: _Anatomy, fields, scan: _Scan, scale, lesions_spec, size: int):
    """The noise-free image and tissue map at full resolution, and the render facts.

    Returns
    -------
    img, tis, facts, f_z (the upsampling factor along z)
    """
    z_std, y_std, x_std, w, f_xy, f_z = _render_grid(scan, scale, size)
    canvas = _Canvas(z_std, y_std, x_std, w, _GAS_HU)
    facts = _render(anat, canvas, fields, scan.hu, scan.phase, lesions_spec)
    img, tis = canvas.img, canvas.tis
    del canvas
    for axis, factor, length in ((2, f_xy, size), (1, f_xy, size), (0, f_z, scan.n)):
        if factor > 1:
            img = _upsample(img, factor, axis, length)
            tis = np.repeat(tis, factor, axis=axis)[(slice(None),) * axis + (slice(0, length),)]
    return img, tis, facts, f_z


def _meta(scan: _Scan, scale, facts, label, spacing, seed, size, n_slices) -> dict:
    """The :attr:`Phantom.meta` dict; lesion centres go from the standard frame to canonical voxels."""
    dz, px = scan.dz, scan.px
    for les in facts["lesions"]:
        cz_, cy_, cx_ = les.pop("centre_std")
        les["centre_voxel"] = (
            round(float((cz_ - scan.z_bot) * scale[0] / dz - 0.5), 2),
            round(float((cy_ * scale[1] + scan.offset_y) / px + (size - 1) / 2.0), 2),
            round(float((cx_ * scale[2] + scan.offset_x) / px + (size - 1) / 2.0), 2),
        )
    return {
        "seed": int(seed),
        "size": int(size),
        "n_slices": None if n_slices is None else int(n_slices),
        "phase": scan.phase,
        "noise_sigma": round(scan.noise_sigma, 2),
        "noise_corr_px": round(scan.noise_corr, 3),
        "noise_bandpass": round(scan.noise_bandpass, 3),
        "psf_mm": round(scan.psf_mm, 3),
        "thickness_mm": round(scan.thickness, 3),
        "padding": scan.padding,
        "fov_mm": round(scan.fov, 2),
        "crop": scan.crop,
        "body_cut": scan.body_cut,
        "enhancement": round(scan.enhancement, 3),
        "steatosis": scan.steatosis,
        "streaks": len(scan.artefacts["streaks"]),
        "cupping_hu": round(scan.artefacts["cupping"], 2),
        "dark_band_hu": round(scan.artefacts["dark_band"], 2),
        "bias_hu": round(scan.artefacts["bias"], 2),
        "rescale_intercept": scan.intercept,
        "oral_contrast": scan.oral,
        "origin": (scan.table_z, scan.offset_x, scan.offset_y),
        "liver_ml": round(float((label > 0).sum()) * voxel_ml(spacing), 1),
        "n_lesions": len(facts["lesions"]),
        "lesions": facts["lesions"],
        "anatomy": facts.get("anatomy", {}),
        "parenchyma": facts.get("parenchyma", {}),
        "hu": {k: round(v, 1) for k, v in scan.hu.items()},
    }


def _tag(seed: int, case: int, size: int, n_slices: int | None, geometry=None) -> str:
    """What the NIfTI ``descrip`` field records (at most 80 bytes), so that a rerun knows what a file holds."""
    slices = "auto" if n_slices is None else n_slices
    if geometry is not None:
        slices = "lits" if geometry == "lits" else f"{geometry[0]}x{geometry[1]}mm"
    return f"liverlib phantom v{GENERATOR_VERSION} seed={seed} case={case} size={size} slices={slices}"


def _paths(out_dir: Path, case_id: int) -> tuple[Path, Path]:
    return out_dir / f"volume-{case_id}.nii.gz", out_dir / f"segmentation-{case_id}.nii.gz"


def write_case(phantom: Phantom, out_dir) -> tuple[Path, Path]:
    """Write one phantom as ``volume-N.nii.gz`` (int16 HU) and ``segmentation-N.nii.gz`` (uint8).

    Both files get the same affine, built for ``phantom.axcodes``; loading them
    with :func:`liverlib.data.load_case` gives back ``phantom.image`` and
    ``phantom.label`` exactly. Each file is written atomically.

    Returns
    -------
    (volume path, segmentation path)
    """
    out_dir = Path(out_dir)
    affine = _affine(phantom)
    geometry = Geometry(affine, tuple(int(s) for s in phantom.image.shape[::-1]), tuple(phantom.axcodes))
    intercept = float(phantom.meta.get("rescale_intercept", 0.0))
    raw = geometry.to_stored(np.rint(phantom.image - intercept).astype(np.int16))
    seg = geometry.to_stored(phantom.label.astype(np.uint8))
    tag = _tag(phantom.meta["seed"], phantom.case_id, phantom.meta["size"], phantom.meta.get("n_slices"),
               phantom.meta.get("geometry"))
    vol_path, seg_path = _paths(out_dir, phantom.case_id)
    for data, path, dtype in ((raw, vol_path, np.int16), (seg, seg_path, np.uint8)):
        img = nib.Nifti1Image(data, affine)
        img.header.set_data_dtype(dtype)
        img.header.set_qform(affine, code=1)
        img.header.set_sform(affine, code=1)
        img.header.set_xyzt_units("mm", "sec")
        img.header["descrip"] = tag.encode()
        if dtype is np.int16 and intercept:
            img.header.set_slope_inter(1.0, intercept)
        with atomic_path(path) as tmp:
            nib.save(img, str(tmp))
    return vol_path, seg_path


def _complete(out_dir: Path, case_id: int, seed: int, size: int, geometry=None) -> bool:
    """Both files exist, carry this cohort's tag and load."""
    vol_path, seg_path = _paths(out_dir, case_id)
    if not (vol_path.is_file() and seg_path.is_file()):
        return False
    tag = _tag(seed, case_id, size, None, geometry)
    try:
        for path in (vol_path, seg_path):
            descrip = nib.load(str(path)).header["descrip"].item().decode(errors="replace")
            if descrip != tag:
                return False
        load_case(CaseFiles(case_id, vol_path, seg_path))
    except (DataError, OSError, ValueError, EOFError):
        return False
    return True


def _make_and_write(case_id: int, seed: int, size: int, out_dir: str, geometry=None) -> int:
    write_case(make_phantom(case_id, seed=seed, size=size, geometry=geometry), out_dir)
    return case_id


def write_cohort(out_dir, cases: int = 20, seed: int = 7, size: int = 256, workers: int = 1,
                 geometry: str | None = None) -> list[Path]:
    """Write a synthetic cohort in the LiTS layout.

    Cases already complete (both files present, loadable and written with the
    same seed and size) are kept, so an interrupted run resumes.

    Parameters
    ----------
    out_dir : str or Path
    cases : int
        Number of cases, written as case numbers 0 .. cases-1.
    seed : int
    size : int
        In-plane pixels, at least 64.
    workers : int
        Parallel processes; 1 renders in this process.
    geometry : {None, "lits"}
        ``"lits"``: LiTS's geometry (:func:`make_phantom`); use ``size=512``.

    Returns
    -------
    list of Path
        The volume file of every case, in case order.
    """
    if cases < 1:
        raise ValueError(f"cases must be at least 1, got {cases}")
    if size < 64:
        raise ValueError(f"size must be at least 64 pixels, got {size}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError("exists and is not a folder", out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [k for k in range(cases) if not _complete(out_dir, k, seed, size, geometry)]
    with tqdm(total=cases, initial=cases - len(todo), desc="phantoms", unit="case", disable=None) as bar:
        if workers == 1 or len(todo) <= 1:
            for k in todo:
                _make_and_write(k, seed, size, str(out_dir), geometry)
                bar.update(1)
        else:
            # spawn: safe even when the caller has threads (TensorFlow) running
            ctx = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(min(workers, len(todo)), mp_context=ctx) as pool:
                futures = [pool.submit(_make_and_write, k, seed, size, str(out_dir), geometry) for k in todo]
                for fut in concurrent.futures.as_completed(futures):
                    fut.result()
                    bar.update(1)
    return [_paths(out_dir, k)[0] for k in range(cases)]
