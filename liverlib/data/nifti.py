"""CT data: discovery of LiTS / MSD folders, lazy loading, canonical orientation, validation.

Canonical orientation
---------------------
Every volume is returned as a numpy array with scikit-image's (plane, row, column)
axes, in one fixed anatomical orientation:

* plane  : inferior -> superior  (axial slices, feet to head)
* row    : anterior -> posterior (image top is the patient's front)
* column : patient right -> left (radiological display: patient right on the image left)

That is NIfTI/DICOM ``LPS+`` voxel order, transposed to (k, j, i). An axial slice
``volume[z]`` therefore shows the way radiologists and the LiTS figures show it,
with ``matplotlib.imshow`` defaults, whatever the orientation the file was stored
in. Reorientation only permutes and flips axes (no resampling), so it is exact
and reversible: :class:`Geometry` keeps what is needed to write a prediction back
with the input's shape, affine and orientation.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import nibabel as nib
import numpy as np
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt2axcodes,
    ornt_transform,
)

from liverlib.atomic import atomic_path
from liverlib.errors import DataError
from liverlib.transforms.morphology import connected_components, voxel_ml

CANONICAL_AXCODES = ("L", "P", "S")  # voxel axes (i, j, k) before the (k, j, i) transpose
LABELS = {0: "background", 1: "liver", 2: "lesion"}
NIFTI_SUFFIXES = (".nii", ".nii.gz")
_LITS_IMAGE = re.compile(r"^volume-(\d+)\.nii(\.gz)?$")
_LITS_LABEL = re.compile(r"^segmentation-(\d+)\.nii(\.gz)?$")
_MSD_NAME = re.compile(r"^liver_(\d+)\.nii(\.gz)?$")
_AFFINE_TOL_MM = 1e-3
LITS_IMAGE, LITS_LABEL = _LITS_IMAGE, _LITS_LABEL  # public aliases


@dataclass(frozen=True)
class CaseFiles:
    """Where one case lives on disk."""

    case_id: int
    image: Path
    label: Path | None = None


@dataclass(frozen=True)
class Geometry:
    """The stored geometry of a volume, to map canonical arrays back to it.

    Attributes
    ----------
    affine : ndarray, shape (4, 4)
        The file's voxel-to-world (RAS mm) affine.
    shape : tuple of int
        The file's 3-D voxel shape.
    axcodes : tuple of str
        The file's orientation, e.g. ``("R", "A", "S")``.
    """

    affine: np.ndarray
    shape: tuple[int, int, int]
    axcodes: tuple[str, str, str]

    @property
    def _to_canonical(self) -> np.ndarray:
        return ornt_transform(io_orientation(self.affine), axcodes2ornt(CANONICAL_AXCODES))

    def to_canonical(self, data: np.ndarray) -> np.ndarray:
        """Stored voxel order -> canonical (plane, row, column)."""
        return np.ascontiguousarray(apply_orientation(data, self._to_canonical).transpose(2, 1, 0))

    def to_stored(self, canonical: np.ndarray) -> np.ndarray:
        """Canonical (plane, row, column) -> stored voxel order (inverse of :meth:`to_canonical`)."""
        back = ornt_transform(axcodes2ornt(CANONICAL_AXCODES), io_orientation(self.affine))
        out = apply_orientation(np.asarray(canonical).transpose(2, 1, 0), back)
        if out.shape != self.shape:
            raise ValueError(f"array of shape {canonical.shape} does not match the geometry {self.shape}")
        return np.ascontiguousarray(out)

    def canonical_affine(self) -> np.ndarray:
        """Affine of the canonical array in (column, row, plane) = (i, j, k) voxel order."""
        return self.affine @ inv_ornt_aff(self._to_canonical, self.shape)

    def spacing(self) -> tuple[float, float, float]:
        """Voxel spacing in mm, in canonical (plane, row, column) order."""
        zooms = np.sqrt((self.canonical_affine()[:3, :3] ** 2).sum(axis=0))
        return (float(zooms[2]), float(zooms[1]), float(zooms[0]))


@dataclass
class Case:
    """One loaded case in canonical orientation.

    Attributes
    ----------
    case_id : int
    image : ndarray of float32, shape (planes, rows, columns)
        CT intensities in HU.
    label : ndarray of uint8 or None
        0 = background, 1 = liver, 2 = lesion; same shape as ``image``.
    spacing : tuple of float
        Voxel size in mm, (plane, row, column).
    geometry : Geometry
        The stored geometry, to write results back in the input's frame.
    files : CaseFiles
    """

    case_id: int
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float]
    geometry: Geometry
    files: CaseFiles = field(repr=False)


# --------------------------------------------------------------------------- discovery


def _strip_nii(name: str) -> str:
    return name[: -len(".gz")] if name.endswith(".gz") else name


def _index(folder: Path, pattern: re.Pattern) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = pattern.match(path.name)
        if not match or path.name.startswith("."):
            continue
        case_id = int(match.group(1))
        if case_id in found:
            raise DataError(f"case {case_id} is stored twice (also as {found[case_id].name})", path)
        found[case_id] = path
    return found


def discover(data_dir: str | Path, require_labels: bool = True) -> list[CaseFiles]:
    """Find the cases of a LiTS or MSD Task03 folder.

    LiTS: ``volume-N.nii[.gz]`` and ``segmentation-N.nii[.gz]`` side by side
    (also under one level of sub-folders, as the two LiTS download batches come).
    MSD Task03: ``imagesTr/liver_N.nii.gz`` and ``labelsTr/liver_N.nii.gz``.

    Parameters
    ----------
    data_dir : str or Path
    require_labels : bool
        If True, a volume without its segmentation (or the reverse) is an error.

    Returns
    -------
    list of CaseFiles, sorted by case number.

    Raises
    ------
    DataError
        If the folder does not exist, holds no case, or a volume lacks its labels.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError("no such folder", root)
    if (root / "imagesTr").is_dir():
        images = _index(root / "imagesTr", _MSD_NAME)
        labels = _index(root / "labelsTr", _MSD_NAME)
    else:
        folders = [root] + sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        images, labels = {}, {}
        for folder in folders:
            for target, pattern in ((images, _LITS_IMAGE), (labels, _LITS_LABEL)):
                for case_id, path in _index(folder, pattern).items():
                    if case_id in target:
                        raise DataError(f"case {case_id} is stored twice (also as {target[case_id]})", path)
                    target[case_id] = path
    if not images and not labels:
        raise DataError(
            "no CT cases found: expected LiTS volume-N.nii[.gz] + segmentation-N.nii[.gz], "
            "or MSD imagesTr/liver_N.nii.gz + labelsTr/liver_N.nii.gz",
            root,
        )
    cases = []
    for case_id in sorted(set(images) | set(labels)):
        if case_id not in images:
            raise DataError(f"segmentation without its volume (case {case_id})", labels[case_id])
        if require_labels and case_id not in labels:
            raise DataError(f"volume without its segmentation (case {case_id})", images[case_id])
        cases.append(CaseFiles(case_id, images[case_id], labels.get(case_id)))
    return cases


def case_id_from_name(path: str | Path) -> int | None:
    """The case number in a LiTS or MSD file name, or None (``volume-12.nii`` -> 12)."""
    match = re.search(r"(\d+)\.nii(\.gz)?$", Path(path).name)
    return int(match.group(1)) if match else None


# --------------------------------------------------------------------------- loading


def _open(path: Path) -> nib.Nifti1Image:
    """Open a NIfTI file or raise a one-line DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path)
    if not path.name.endswith(NIFTI_SUFFIXES):
        raise DataError("not a NIfTI file name (.nii or .nii.gz expected)", path)
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for bad headers
        raise DataError(f"not a readable NIfTI file ({_short(exc)})", path) from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataError(f"not a NIfTI image ({type(img).__name__})", path)
    return img


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _read(img: nib.Nifti1Image, path: Path, dtype) -> np.ndarray:
    """Read the voxels, turning truncation and decompression errors into DataError."""
    try:
        data = np.asanyarray(img.dataobj)
    except (EOFError, OSError, ValueError, zlib.error) as exc:
        raise DataError(f"truncated or corrupt NIfTI data ({_short(exc)})", path) from None
    data = _as_3d(data, path)
    return data if dtype is None else data.astype(dtype, copy=False)


def _as_3d(data: np.ndarray, path: Path) -> np.ndarray:
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]  # a trailing singleton axis is harmless
    if data.ndim != 3:
        raise DataError(f"expected a 3-D volume, got {data.ndim}-D with shape {data.shape}", path)
    return data


def geometry_of(img: nib.Nifti1Image, path: Path) -> Geometry:
    """The stored geometry of an opened image, checked for a usable affine."""
    shape = tuple(int(s) for s in img.shape[:3])
    if len(img.shape) > 3 and not (len(img.shape) == 4 and img.shape[3] == 1):
        raise DataError(f"expected a 3-D volume, got {len(img.shape)}-D with shape {tuple(img.shape)}", path)
    if min(shape) < 1:
        raise DataError(f"empty volume with shape {shape}", path)
    return geometry_from_affine(img.affine, shape, path)


def geometry_from_affine(affine: np.ndarray, shape: tuple[int, int, int], path: str | Path) -> Geometry:
    """The :class:`Geometry` of a stored (i, j, k) volume with a voxel-to-RAS affine, checked for use."""
    affine = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise DataError("the affine is singular or not finite", path)
    return Geometry(affine, tuple(int(s) for s in shape), tuple(ornt2axcodes(io_orientation(affine))))


def load_image(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float], Geometry]:
    """Load a CT volume as canonical float32 HU.

    Returns
    -------
    image : ndarray of float32, (plane, row, column)
    spacing : tuple of float, mm
    geometry : Geometry

    Raises
    ------
    DataError
        For an unreadable, truncated, non-3-D or non-finite volume.
    """
    path = Path(path)
    img = _open(path)
    geometry = geometry_of(img, path)
    raw = _read(img, path, None)
    if raw.dtype.kind == "f" and not np.isfinite(raw).all():  # integer data cannot hold NaN
        bad = int(np.size(raw) - np.isfinite(raw).sum())
        raise DataError(f"{bad} voxels are NaN or infinite", path)
    # Reorient the stored (often int16) voxels first, then cast once: half the copies.
    return geometry.to_canonical(raw).astype(np.float32, copy=False), geometry.spacing(), geometry


def load_label(path: str | Path, geometry: Geometry | None = None) -> np.ndarray:
    """Load a segmentation as canonical uint8 in {0, 1, 2}.

    Parameters
    ----------
    path : str or Path
    geometry : Geometry, optional
        The volume's geometry; the label must have the same shape and affine.
    """
    path = Path(path)
    img = _open(path)
    label_geometry = geometry_of(img, path)
    if geometry is not None:
        if label_geometry.shape != geometry.shape:
            raise DataError(f"shape {label_geometry.shape} does not match its volume's {geometry.shape}", path)
        if not np.allclose(label_geometry.affine, geometry.affine, atol=_AFFINE_TOL_MM):
            raise DataError("affine does not match its volume's affine", path)
    data = _read(img, path, None)
    # min/max is a cheap first check; np.unique only runs to name the bad values.
    ok = data.min() >= 0 and data.max() <= 2
    if ok and data.dtype.kind == "f":
        ok = bool(np.all(data == np.round(data)))
    if not ok:
        values = np.unique(data)
        shown = ", ".join(f"{v:g}" for v in values[~np.isin(values, (0, 1, 2))][:5])
        raise DataError(f"labels outside {{0, 1, 2}}: {shown}", path)
    return (geometry or label_geometry).to_canonical(data.astype(np.uint8))


def load_case(files: CaseFiles) -> Case:
    """Load one case (volume and, if present, segmentation) in canonical orientation."""
    image, spacing, geometry = load_image(files.image)
    label = load_label(files.label, geometry) if files.label is not None else None
    return Case(files.case_id, image, label, spacing, geometry, files)


def iter_cases(cases: list[CaseFiles]) -> Iterator[Case]:
    """Load cases lazily, one at a time, so the cohort never sits in memory."""
    for files in cases:
        yield load_case(files)


def save_like(array: np.ndarray, geometry: Geometry, path: str | Path, dtype=np.uint8) -> Path:
    """Write a canonical array as NIfTI with the stored shape, affine and orientation.

    The write is atomic: the file appears complete or not at all.
    """
    data = geometry.to_stored(np.asarray(array).astype(dtype, copy=False))
    img = nib.Nifti1Image(data, geometry.affine)
    img.header.set_data_dtype(dtype)
    img.header.set_qform(geometry.affine, code=1)
    img.header.set_sform(geometry.affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


# --------------------------------------------------------------------------- summary


def describe(case: Case) -> dict:
    """Per-case facts for ``liverlib check`` and the cohort table."""
    out = {
        "case": case.case_id,
        "file": case.files.image.name,
        "shape": tuple(int(s) for s in case.image.shape),
        "spacing_mm": tuple(round(s, 3) for s in case.spacing),
        "orientation": "".join(case.geometry.axcodes),
        "hu_min": float(case.image.min()),
        "hu_max": float(case.image.max()),
    }
    if case.label is not None:
        counts = np.bincount(case.label.ravel(), minlength=3)
        out["labels"] = tuple(int(v) for v in np.flatnonzero(counts))
        out["liver_ml"] = round(float(counts[1] + counts[2]) * voxel_ml(case.spacing), 1)
        out["lesion_ml"] = round(float(counts[2]) * voxel_ml(case.spacing), 2)
        out["lesions"] = count_lesions(case.label)
    return out


def count_lesions(label: np.ndarray) -> int:
    """Number of 3-D connected lesion components (label 2)."""

    return len(connected_components(np.asarray(label) == 2)[1]) - 1


def cohort_table(cases: list[CaseFiles], workers: int = 1):
    """One row per case: shape, spacing, orientation, liver volume, lesion count and volume.

    Cases are loaded one at a time (or by ``workers`` processes), never all at once.

    Returns
    -------
    pandas.DataFrame
    """
    from concurrent.futures import ProcessPoolExecutor

    import pandas as pd

    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            rows = list(pool.map(_describe_files, cases))
    else:
        rows = [_describe_files(files) for files in cases]
    table = pd.DataFrame(rows).set_index("case")
    table["shape"] = table["shape"].map(lambda s: "x".join(map(str, s)))
    table["spacing_mm"] = table["spacing_mm"].map(lambda s: "x".join(f"{v:.2f}" for v in s))
    return table.drop(columns=["labels"], errors="ignore")


def _describe_files(files: CaseFiles) -> dict:
    return describe(load_case(files))
