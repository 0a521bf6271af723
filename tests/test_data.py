"""The data layer: discovery, canonical orientation, validation of bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from support import REAL_CT, REAL_CT_FULL, REAL_MASK, reoriented_copy, small_case, write_nifti

from liverlib import data
from liverlib.errors import DataError


def test_real_ct_loads_canonical():
    image, spacing, geometry = data.load_image(REAL_CT)
    label = data.load_label(REAL_MASK, geometry)
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert image.shape == label.shape == (30, 101, 122)  # stored RAS (122, 101, 30) -> (plane, row, column)
    assert spacing == pytest.approx((3.0, 3.0, 3.0))
    assert geometry.axcodes == ("R", "A", "S")
    assert -1100 <= image.min() and image.max() <= 3100
    # Radiological display: the liver (patient right) sits in the left half of the columns
    # and the body's front (anterior) at the top rows.
    planes, rows, columns = np.nonzero(label)
    assert columns.mean() < label.shape[2] / 2
    body_rows = np.nonzero((image > -300).any(axis=(0, 2)))[0]
    assert body_rows.min() < label.shape[1] * 0.25
    # Superior is the last plane. The scan runs pelvis -> mid-liver (its top 30
    # planes are the lower liver, not the dome), so liver area grows upwards...
    area = label.sum(axis=(1, 2))
    assert area[-5:].mean() > 2 * area[:5].mean()
    # ...and in the full field of view the pelvic bones are in the lowest planes.
    full, _, _ = data.load_image(REAL_CT_FULL)
    bone = (full > 300).sum(axis=(1, 2))
    assert bone[:30].mean() > 2 * bone[-30:].mean()


@pytest.mark.parametrize("axes,flips", [((0, 1, 2), (0,)), ((0, 1, 2), (2,)), ((2, 0, 1), (0, 1)), ((1, 0, 2), (1, 2))])
def test_reoriented_copy_loads_to_same_canonical_array(tmp_path, axes, flips):
    reference, spacing, _ = data.load_image(REAL_CT)
    moved = reoriented_copy(REAL_CT, tmp_path / "moved.nii.gz", flip_axes=flips, transpose=axes)
    image, moved_spacing, geometry = data.load_image(moved)
    assert geometry.axcodes != ("R", "A", "S")
    np.testing.assert_array_equal(image, reference)
    assert moved_spacing == pytest.approx(spacing)


def test_save_like_restores_stored_orientation(tmp_path):
    moved = reoriented_copy(REAL_MASK, tmp_path / "moved.nii.gz", flip_axes=(0,), transpose=(2, 0, 1))
    label_img = nib.load(str(moved))
    _, _, geometry = data.load_image(moved)
    label = data.load_label(moved, geometry)
    out = data.save_like(label, geometry, tmp_path / "out.nii.gz")
    written = nib.load(str(out))
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), np.asanyarray(label_img.dataobj))
    np.testing.assert_allclose(written.affine, label_img.affine)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left no temporary file


def test_discover_lits_and_msd(tmp_path, lits_dir):
    cases = data.discover(lits_dir)
    assert [c.case_id for c in cases] == [0, 1]
    assert cases[0].image.name == "volume-0.nii.gz" and cases[0].label.name == "segmentation-0.nii.gz"
    msd = tmp_path / "Task03_Liver"
    for case_id in (3, 10):
        image, label = small_case(seed=case_id)
        write_nifti(msd / "imagesTr" / f"liver_{case_id}.nii.gz", image)
        write_nifti(msd / "labelsTr" / f"liver_{case_id}.nii.gz", label)
    cases = data.discover(msd)
    assert [c.case_id for c in cases] == [3, 10]
    case = data.load_case(cases[1])
    assert case.image.shape == (6, 12, 16) and set(np.unique(case.label)) == {0, 1, 2}


def test_lits_batches_in_subfolders(tmp_path):
    for case_id, batch in ((0, "batch1"), (29, "batch2")):
        image, label = small_case(seed=case_id)
        write_nifti(tmp_path / batch / f"volume-{case_id}.nii", image)
        write_nifti(tmp_path / batch / f"segmentation-{case_id}.nii", label)
    assert [c.case_id for c in data.discover(tmp_path)] == [0, 29]


def test_iter_cases_is_lazy(lits_dir):
    cases = data.discover(lits_dir)
    stream = data.iter_cases(cases)
    assert not isinstance(stream, list)
    first = next(stream)
    assert first.case_id == 0 and first.files == cases[0]


def test_describe_counts_liver_and_lesions(lits_dir):
    summary = data.describe(data.load_case(data.discover(lits_dir)[0]))
    assert summary["labels"] == (0, 1, 2)
    assert summary["liver_ml"] == pytest.approx(7 * 6 * 4 / 1000, abs=0.05)
    assert summary["lesions"] == 1


# --------------------------------------------------------------------------- bad input


def _make_bad(kind: str, root: Path) -> Path:
    """Write a LiTS folder with one good case and one case broken in ``kind`` way; return the bad file."""
    image, label = small_case()
    write_nifti(root / "volume-0.nii.gz", image)
    write_nifti(root / "segmentation-0.nii.gz", label)
    vol, seg = root / "volume-1.nii.gz", root / "segmentation-1.nii.gz"
    write_nifti(vol, image)
    write_nifti(seg, label)
    if kind == "truncated":
        raw = vol.read_bytes()
        vol.write_bytes(raw[: len(raw) // 2])
        return vol
    if kind == "not_nifti":
        seg.write_bytes(gzip.compress(b"this is a PNG, honest" * 20))
        return seg
    if kind == "labels":
        bad = label.copy()
        bad[0, 0, 0] = 5
        write_nifti(seg, bad)
        return seg
    if kind == "shape":
        write_nifti(seg, label[:, :, :-1])
        return seg
    if kind == "affine":
        affine = np.diag([0.8, 0.8, 2.5, 1.0])
        write_nifti(seg, label, affine)
        return seg
    if kind == "4d":
        write_nifti(vol, np.stack([image, image], axis=-1))
        return vol
    if kind == "nan":
        bad = image.astype(np.float32)
        bad[2, 2, 2] = np.nan
        write_nifti(vol, bad)
        return vol
    raise AssertionError(kind)


BAD_KINDS = {
    "truncated": "truncated",
    "not_nifti": "not a readable NIfTI",
    "labels": "labels outside",
    "shape": "does not match",
    "affine": "affine does not match",
    "4d": "3-D",
    "nan": "NaN",
}


@pytest.mark.parametrize("kind", sorted(BAD_KINDS))
def test_bad_case_raises_one_line_naming_file(tmp_path, kind):
    bad_file = _make_bad(kind, tmp_path)
    cases = data.discover(tmp_path)
    data.load_case(cases[0])  # the good case still loads
    with pytest.raises(DataError) as info:
        data.load_case(cases[1])
    message = str(info.value)
    assert message.startswith(str(bad_file)) and BAD_KINDS[kind] in message
    assert "\n" not in message


def test_empty_folder_and_missing_segmentation(tmp_path):
    with pytest.raises(DataError, match="no CT cases found"):
        data.discover(tmp_path)
    with pytest.raises(DataError, match="no such folder"):
        data.discover(tmp_path / "absent")
    image, _ = small_case()
    write_nifti(tmp_path / "volume-4.nii.gz", image)
    with pytest.raises(DataError, match="volume without its segmentation") as info:
        data.discover(tmp_path)
    assert "volume-4.nii.gz" in str(info.value)
    assert [c.label for c in data.discover(tmp_path, require_labels=False)] == [None]


def test_duplicate_case_is_an_error(tmp_path):
    image, label = small_case()
    write_nifti(tmp_path / "volume-0.nii", image)
    write_nifti(tmp_path / "volume-0.nii.gz", image)
    write_nifti(tmp_path / "segmentation-0.nii", label)
    with pytest.raises(DataError, match="stored twice"):
        data.discover(tmp_path)


def test_case_id_from_name():
    assert data.case_id_from_name("volume-12.nii") == 12
    assert data.case_id_from_name("/x/liver_7.nii.gz") == 7
    assert data.case_id_from_name("test-segmentation-101.nii.gz") == 101
    assert data.case_id_from_name("notes.txt") is None
