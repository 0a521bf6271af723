"""DICOM in and out: one CT series of a folder as a canonical HU volume; labels as a DICOM Segmentation.

A folder exported from a scanner or a PACS holds one or several series, each a
file per plane. :func:`load_dicom_series` reads one (pydicom), checks that it
is a regular volume and returns what :func:`liverlib.data.load_image` returns
for a NIfTI file: canonical ``(plane, row, column)`` float32 HU, the spacing
and a :class:`~liverlib.data.nifti.Geometry` whose affine is the series' own
(DICOM patient coordinates, LPS, turned into NIfTI's RAS), so a prediction
written with :func:`liverlib.data.save_like` lies on the source images.

Each defect a real export can have is one :class:`~liverlib.errors.DataError`
naming the folder or file: several series without ``series_uid`` (the error
lists them), a non-CT modality, slices of different size or orientation, a
gantry tilt (sheared planes), a missing plane, uneven plane spacing, and pixel
data that the installed pydicom plugins cannot decode.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from liverlib.errors import DataError

__all__ = ["DicomSeries", "find_series", "load_dicom_series", "save_dicom_seg"]

_ANGLE_TOL_DEG = 0.5     # slice normal vs the line through the slice positions; DICOM stores ~6 digits
_SPACING_TOL = 0.02      # relative spread of the plane gaps accepted as even (CT positions have ~0.01 mm round-off)


@dataclass(frozen=True)
class DicomSeries:
    """One series of a folder: its files and what describes it."""

    uid: str
    files: tuple[Path, ...]
    modality: str
    description: str

    def summary(self) -> str:
        """One line for a list of series: UID, modality, planes, description."""
        text = f"{self.uid or '(no SeriesInstanceUID)'} ({self.modality}, {len(self.files)} files"
        return text + (f", {self.description!r})" if self.description else ")")


def _pydicom():
    import pydicom  # imported here: NIfTI users never load it

    return pydicom


def _headers(folder: Path) -> list[tuple[Path, object]]:
    """Every DICOM file of a folder (recursively) with its header; other files are skipped."""
    pydicom = _pydicom()
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # not DICOM (a README, DICOMDIR's siblings...): not ours to read
            continue
        if "SeriesInstanceUID" in ds and "SOPClassUID" in ds and path.name != "DICOMDIR":
            found.append((path, ds))
    return found


def _scan(folder: Path) -> dict[str, list[tuple[Path, object]]]:
    """The DICOM files of a folder grouped by series UID, each with its header (one read per file)."""
    if not folder.is_dir():
        raise DataError("no such folder", folder)
    groups: dict[str, list] = defaultdict(list)
    for path, ds in _headers(folder):
        groups[str(ds.SeriesInstanceUID)].append((path, ds))
    if not groups:
        raise DataError("no DICOM file in this folder", folder)
    return groups


def _summaries(groups: dict[str, list]) -> list[DicomSeries]:
    series = []
    for uid, members in groups.items():
        first = members[0][1]
        series.append(DicomSeries(uid, tuple(p for p, _ in members), str(first.get("Modality", "?")),
                                  str(first.get("SeriesDescription", "")).strip()))
    return sorted(series, key=lambda s: (-len(s.files), s.uid))


def find_series(folder: str | Path) -> list[DicomSeries]:
    """The series of a DICOM folder, largest first.

    Raises
    ------
    DataError
        If the folder does not exist or holds no DICOM file.
    """
    return _summaries(_scan(Path(folder)))


def _pick(folder: Path, uid: str | None) -> tuple[DicomSeries, list[tuple[Path, object]]]:
    """The chosen series and its files' headers: ``uid``, or the folder's only series."""
    groups = _scan(folder)
    series = _summaries(groups)
    if uid is not None:
        chosen = [s for s in series if s.uid == uid]
        if not chosen:
            raise DataError(f"no series {uid} here; the folder holds: " + "; ".join(s.summary() for s in series), folder)
    elif len(series) > 1:
        raise DataError(f"{len(series)} series here; pick one with --series UID: " + "; ".join(s.summary() for s in series),
                        folder)
    else:
        chosen = series
    return chosen[0], groups[chosen[0].uid]


def _vector(ds, key: str, size: int, path: Path) -> np.ndarray:
    try:
        value = np.asarray([float(v) for v in ds[key].value], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise DataError(f"no usable {key} (needed for the volume's geometry)", path) from None
    if value.shape != (size,) or not np.all(np.isfinite(value)):
        raise DataError(f"{key} must hold {size} numbers, got {ds[key].value!r}", path)
    return value


def _geometry(folder: Path, items: list) -> tuple[np.ndarray, np.ndarray, float, np.ndarray, list]:
    """Sorted slices and the affine pieces: orientation (2, 3), spacing (row, col), plane gap, positions."""
    first_path, first = items[0]
    orientation = _vector(first, "ImageOrientationPatient", 6, first_path).reshape(2, 3)
    pixel = _vector(first, "PixelSpacing", 2, first_path)
    size = (int(first.Rows), int(first.Columns))
    for path, ds in items[1:]:
        if (int(ds.Rows), int(ds.Columns)) != size:
            raise DataError(f"slices of different sizes in one series ({size[0]}x{size[1]} and {ds.Rows}x{ds.Columns})", path)
        if not np.allclose(_vector(ds, "ImageOrientationPatient", 6, path).reshape(2, 3), orientation, atol=1e-4):
            raise DataError("slices of different orientations in one series", path)
        if not np.allclose(_vector(ds, "PixelSpacing", 2, path), pixel, atol=1e-4):
            raise DataError("slices of different pixel spacings in one series", path)
    normal = np.cross(orientation[0], orientation[1])
    positions = np.stack([_vector(ds, "ImagePositionPatient", 3, path) for path, ds in items])
    order = np.argsort(positions @ normal, kind="stable")
    items = [items[i] for i in order]
    positions = positions[order]
    along = positions @ normal
    if len(items) < 2:
        raise DataError("a single slice is not a volume", folder)
    gaps = np.diff(along)
    if np.any(gaps < 1e-3):
        dup = items[int(np.argmin(gaps)) + 1][0]
        raise DataError("two slices share one position (duplicates, or several acquisitions in one series)", dup)
    travel = positions[-1] - positions[0]
    tilt = np.degrees(np.arccos(min(1.0, abs(float(travel @ normal)) / float(np.linalg.norm(travel)))))
    tag_tilt = float(first.get("GantryDetectorTilt", 0) or 0)
    if tilt > _ANGLE_TOL_DEG or abs(tag_tilt) > _ANGLE_TOL_DEG:
        raise DataError(f"gantry tilt of {max(tilt, abs(tag_tilt)):.1f} degrees: the planes are sheared; "
                        "resample the series to an untilted grid first", folder)
    gap = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - gap)))
    if abs(gaps[worst] - gap) > _SPACING_TOL * gap:
        ratio = gaps[worst] / gap
        if abs(ratio - round(ratio)) < _SPACING_TOL and round(ratio) >= 2:
            raise DataError(f"{round(ratio) - 1} slice(s) missing between positions {along[worst]:.2f} and "
                            f"{along[worst + 1]:.2f} mm (the other planes are {gap:.2f} mm apart)", folder)
        raise DataError(f"uneven slice spacing ({gaps.min():.2f} to {gaps.max():.2f} mm); "
                        "resample the series to even planes first", folder)
    return orientation, pixel, gap, positions, items


def _pixels(path: Path, ds_header, pydicom) -> np.ndarray:
    """One slice in HU (slope and intercept applied)."""
    try:
        ds = pydicom.dcmread(path)
        raw = ds.pixel_array
    except Exception as exc:  # pydicom raises RuntimeError, NotImplementedError... per missing codec
        syntax = getattr(getattr(ds_header, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        if "missing dependencies" in str(exc) or "plugins" in str(exc):
            why = "no installed pydicom plugin decodes it; pip install pylibjpeg pylibjpeg-libjpeg (or python-gdcm)"
        else:
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise DataError(f"cannot decode the pixel data (transfer syntax {name}): {why}", path) from None
    if raw.ndim != 2:
        raise DataError(f"expected one 2-D slice per file, got pixel data of shape {raw.shape}", path)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return raw.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def load_dicom_series(folder: str | Path, series_uid: str | None = None):
    """Load one CT series of a folder as canonical float32 HU.

    Parameters
    ----------
    folder : str or Path
        A folder of DICOM files (searched recursively).
    series_uid : str, optional
        The SeriesInstanceUID to read; needed when the folder holds several.

    Returns
    -------
    image : ndarray of float32, (plane, row, column)
    spacing : tuple of float, mm
    geometry : liverlib.data.nifti.Geometry
        Stored shape (columns, rows, slices) and the RAS affine of the series.

    Raises
    ------
    DataError
        For each defect listed in the module docstring, naming the folder or file.
    """
    from liverlib.data.nifti import Geometry, geometry_from_affine

    folder = Path(folder)
    series, items = _pick(folder, series_uid)
    if series.modality != "CT":
        raise DataError(f"series {series.uid} is {series.modality}, not CT: the networks were trained on CT in HU", folder)
    pydicom = _pydicom()
    orientation, pixel, gap, positions, items = _geometry(folder, items)
    # Voxel (i = column, j = row, k = slice) -> LPS mm, then LPS -> RAS (x and y negated).
    lps = np.eye(4)
    lps[:3, 0] = orientation[0] * pixel[1]  # along a row: the column index, spaced by PixelSpacing[1]
    lps[:3, 1] = orientation[1] * pixel[0]  # down a column: the row index, spaced by PixelSpacing[0]
    lps[:3, 2] = (positions[-1] - positions[0]) / (len(items) - 1)
    lps[:3, 3] = positions[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    stored = np.stack([_pixels(p, ds, pydicom) for p, ds in items], axis=-1).transpose(1, 0, 2)  # (i, j, k)
    geometry: Geometry = geometry_from_affine(affine, stored.shape, folder)
    return geometry.to_canonical(stored), geometry.spacing(), geometry


def _sorted_sources(folder: Path, series_uid: str | None) -> tuple[list, list[str]]:
    """The series' headers in plane order, as :func:`load_dicom_series` stacks them (a Segmentation needs no pixels).

    Anonymizers often blank the identifying UIDs that a Segmentation must
    reference. They are filled in memory (the files are not touched): the
    SOP class and instance from each file's meta header, which keeps them, and
    a blank study or series UID by one derived from the images' own UIDs, so
    the same series always gets the same one. The second value names what was filled.
    """
    pydicom = _pydicom()
    sources = [ds for _, ds in _geometry(folder, _pick(folder, series_uid)[1])[4]]
    filled = []
    for key, meta in (("SOPClassUID", "MediaStorageSOPClassUID"), ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
        blank = [ds for ds in sources if not str(ds.get(key, "")).strip()]
        for ds in blank:
            value = str(ds.file_meta.get(meta, "")).strip()
            if not value:
                raise DataError(f"no {key} in the file or its meta header: a Segmentation cannot reference it", ds.filename)
            setattr(ds, key, value)
        if blank:
            filled.append(f"{key} from the file meta header")
    seed = [str(ds.SOPInstanceUID) for ds in sources]
    for key in ("StudyInstanceUID", "SeriesInstanceUID"):
        if not all(str(ds.get(key, "")).strip() for ds in sources):
            uid = pydicom.uid.generate_uid(entropy_srcs=[key, *seed])
            for ds in sources:
                setattr(ds, key, uid)
            filled.append(f"{key} generated ({uid})")
    return sources, filled


def save_dicom_seg(labels: np.ndarray, geometry, folder: str | Path, output: str | Path,
                   series_uid: str | None = None, software_version: str = "") -> Path:
    """Write labels {0, 1, 2} as a DICOM Segmentation of the source series (highdicom), atomically.

    Two overlapping binary segments, as LiTS counts them: 1 "Liver" (labels 1
    and 2: a lesion is part of the liver) and 2 "Lesion" (label 2). The object
    references every source image, so 3D Slicer, OHIF or a PACS shows it on them.

    Parameters
    ----------
    labels : ndarray of uint8, canonical (plane, row, column)
        As :func:`liverlib.inference.predictor.predict_volume` returns them.
    geometry : Geometry
        The series' geometry from :func:`load_dicom_series`.
    folder : str or Path
        The DICOM folder the labels were predicted from.
    output : str or Path
        The ``.dcm`` file to write.
    series_uid : str, optional
        The source series, where the folder holds several.
    software_version : str
        Recorded in the object (e.g. liverlib's version).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from liverlib.atomic import atomic_path

    folder = Path(folder)
    sources, filled = _sorted_sources(folder, series_uid)
    if filled:
        print(f"{folder}: the series has blank UIDs (anonymized?); the Segmentation uses: {'; '.join(filled)}", flush=True)
    frames = geometry.to_stored(np.asarray(labels, np.uint8)).transpose(2, 1, 0)  # (slice, row, column)
    if frames.shape[0] != len(sources):
        raise ValueError(f"{frames.shape[0]} label planes for a series of {len(sources)} images")
    masks = np.stack([frames > 0, frames == 2], axis=-1)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="liverlib Mixed-UNet", version=software_version or "unknown", family=codes.cid7162.ArtificialIntelligence
    )
    segments = [
        hd.seg.SegmentDescription(segment_number=1, segment_label="Liver", segmented_property_category=codes.SCT.Organ,
                                  segmented_property_type=codes.SCT.Liver, algorithm_type="AUTOMATIC",
                                  algorithm_identification=algorithm),
        hd.seg.SegmentDescription(segment_number=2, segment_label="Lesion",
                                  segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                                  segmented_property_type=codes.SCT.Lesion, algorithm_type="AUTOMATIC",
                                  algorithm_identification=algorithm),
    ]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=masks, segmentation_type="BINARY", segment_descriptions=segments,
        series_instance_uid=hd.UID(), series_number=int(sources[0].get("SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="liverlib", manufacturer_model_name="Mixed-UNet",
        software_versions=software_version or "unknown", device_serial_number="0",
        series_description="liverlib liver and lesions", omit_empty_frames=False,
    )
    with atomic_path(output) as tmp:
        seg.save_as(tmp)
    return Path(output)
