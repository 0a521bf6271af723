"""DICOM series in and DICOM Segmentation out: the real series against its NIfTI conversion, each defect in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")

from liverlib import config, data  # noqa: E402
from liverlib.cli import main  # noqa: E402
from liverlib.data.dicom import find_series, load_dicom_series, save_dicom_seg  # noqa: E402
from liverlib.errors import DataError  # noqa: E402
from stub_models import SIZE, make_run, stub  # noqa: E402

DATA = Path(__file__).parent / "data"
SERIES = DATA / "ct_chest_abdomen_2mm_dicom"
NIFTI = DATA / "ct_abdomen_2mm_512.nii.gz"  # the same series, converted by the scan's source (NOTICE.md)


@pytest.fixture(scope="module")
def stub_run(tmp_path_factory) -> Path:
    """The smoke profile with bright-pixel stubs (as test_inference's real_run)."""
    cfg = config.resolve("smoke", {"preprocess.size": SIZE})
    return make_run(tmp_path_factory.mktemp("dicomrun"), {0: (stub(threshold=0.75), stub(threshold=0.97))}, cfg)


def _copy(tmp_path: Path, name: str = "series") -> Path:
    return Path(shutil.copytree(SERIES, tmp_path / name))


def _edit(folder: Path, which, change) -> None:
    """Apply ``change(dataset, index)`` to the files of ``folder`` picked by ``which(index)`` (sorted by position)."""
    files = sorted(folder.iterdir(), key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))
    for i, path in enumerate(files):
        if which(i):
            ds = pydicom.dcmread(path)
            change(ds, i)
            ds.save_as(path)


def test_series_is_its_nifti_conversion():
    image, spacing, geometry = load_dicom_series(SERIES)
    ref_image, ref_spacing, ref_geometry = data.load_image(NIFTI)
    np.testing.assert_array_equal(image, ref_image)  # slope and intercept applied, same orientation
    np.testing.assert_allclose(spacing, ref_spacing, atol=1e-4)
    np.testing.assert_allclose(geometry.canonical_affine(), ref_geometry.canonical_affine(), atol=1e-3)
    assert image.shape == (20, 512, 512) and -1100 < image.min() and image.max() < 4000


def test_predict_dicom_folder_gives_the_nifti_labels_and_a_seg_that_reads_back(stub_run, tmp_path, capsys):
    from_nifti, from_dicom = tmp_path / "nifti.nii.gz", tmp_path / "dicom.nii.gz"
    assert main(["predict", str(NIFTI), str(from_nifti), "--run", str(stub_run), "--no-crf"]) == 0
    assert main(["predict", str(SERIES), str(from_dicom), "--run", str(stub_run), "--no-crf"]) == 0
    a, b = data.load_label(from_nifti), data.load_label(from_dicom)
    assert a.any() and (a == 2).any()
    np.testing.assert_array_equal(a, b)

    seg_path = tmp_path / "labels.dcm"
    assert main(["predict", str(SERIES), str(seg_path), "--run", str(stub_run), "--no-crf"]) == 0
    printed = capsys.readouterr().out
    assert "DICOM Segmentation" in printed and "blank UIDs" in printed
    seg = hd.seg.segread(seg_path)
    source = [pydicom.dcmread(p, stop_before_pixels=True) for p in SERIES.iterdir()]
    assert seg.SeriesInstanceUID != source[0].SeriesInstanceUID
    assert {s.segment_label for s in seg.SegmentSequence} == {"Liver", "Lesion"}
    # Each source image's frame holds that plane's labels: liver = {1, 2}, lesion = {2}.
    image, _, geometry = load_dicom_series(SERIES)
    stored = geometry.to_stored(b).transpose(2, 1, 0)  # (slice, row, column) in position order
    order = np.argsort([float(ds.ImagePositionPatient[2]) for ds in source])
    for plane, index in enumerate(order):
        uid = source[index].file_meta.MediaStorageSOPInstanceUID  # the export blanked SOPInstanceUID; the meta keeps it
        masks = seg.get_pixels_by_source_instance(source_sop_instance_uids=[uid], segment_numbers=[1, 2])[0]
        np.testing.assert_array_equal(masks[..., 0] > 0, stored[plane] > 0)
        np.testing.assert_array_equal(masks[..., 1] > 0, stored[plane] == 2)


def test_two_series_need_a_pick(tmp_path, stub_run, capsys):
    folder = tmp_path / "two"
    first = _copy(folder, "a")
    second = _copy(folder, "b")
    uid = pydicom.uid.generate_uid()
    _edit(second, lambda i: True, lambda ds, i: (setattr(ds, "SeriesInstanceUID", uid),
                                                 setattr(ds, "SOPInstanceUID", pydicom.uid.generate_uid())))
    assert len(find_series(folder)) == 2
    with pytest.raises(DataError, match="2 series here; pick one with --series UID") as err:
        load_dicom_series(folder)
    assert uid in str(err.value) and str(folder) in str(err.value)
    picked, _, _ = load_dicom_series(folder, uid)
    np.testing.assert_array_equal(picked, load_dicom_series(first)[0])
    out = tmp_path / "o.nii.gz"
    assert main(["predict", str(folder), str(out), "--run", str(stub_run)]) == 2
    line = capsys.readouterr().err.strip()
    assert len(line.splitlines()) == 1 and "--series" in line and not out.exists()


@pytest.mark.parametrize(
    "defect, which, change, message",
    [
        ("modality", lambda i: True, lambda ds, i: setattr(ds, "Modality", "MR"), "is MR, not CT"),
        ("uneven", lambda i: i >= 10, lambda ds, i: ds.ImagePositionPatient.__setitem__(2, float(ds.ImagePositionPatient[2]) + 0.7),
         "uneven slice spacing"),
        ("tilt", lambda i: True,
         lambda ds, i: ds.ImagePositionPatient.__setitem__(1, float(ds.ImagePositionPatient[1]) + i * 2.0 * np.tan(np.radians(15))),
         "gantry tilt of 15.0 degrees"),
        ("size", lambda i: i == 3, lambda ds, i: (setattr(ds, "Rows", 256), setattr(ds, "PixelData", ds.PixelData[: 256 * 512 * 2])),
         "different sizes"),
        ("compressed", lambda i: i == 5, lambda ds, i: setattr(ds.file_meta, "TransferSyntaxUID", pydicom.uid.JPEGLosslessSV1),
         "cannot decode the pixel data"),
    ],
)
def test_each_defect_is_one_line_naming_the_folder_or_file(tmp_path, stub_run, capsys, defect, which, change, message):
    folder = _copy(tmp_path)
    _edit(folder, which, change)
    out = tmp_path / "o.nii.gz"
    assert main(["predict", str(folder), str(out), "--run", str(stub_run)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err + captured.out
    assert message in lines[0] and str(folder) in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".o*"))


def test_missing_slice_is_named(tmp_path, stub_run, capsys):
    folder = _copy(tmp_path)
    files = sorted(folder.iterdir(), key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))
    files[7].unlink()
    with pytest.raises(DataError, match=r"1 slice\(s\) missing between positions"):
        load_dicom_series(folder)
    assert main(["predict", str(folder), str(tmp_path / "o.nii.gz"), "--run", str(stub_run)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "missing between positions" in lines[0] and str(folder) in lines[0]


def test_not_a_dicom_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("no images")
    with pytest.raises(DataError, match="no DICOM file"):
        load_dicom_series(tmp_path)


def test_seg_output_needs_a_dicom_input(stub_run, tmp_path, capsys):
    out = tmp_path / "o.dcm"
    assert main(["predict", str(NIFTI), str(out), "--run", str(stub_run)]) == 2
    assert "DICOM Segmentation" in capsys.readouterr().err and not out.exists()


def test_save_dicom_seg_refuses_labels_of_another_grid(tmp_path):
    _, _, geometry = data.load_image(DATA / "ct_abdomen_3mm.nii.gz")
    with pytest.raises(ValueError):
        save_dicom_seg(np.zeros((30, 101, 122), np.uint8), geometry, SERIES, tmp_path / "x.dcm")
