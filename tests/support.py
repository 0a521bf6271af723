"""Test support: the real CT in tests/data and small NIfTI writers (imported by tests, not a test module)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

DATA = Path(__file__).parent / "data"
REAL_CT = DATA / "ct_abdomen_3mm.nii.gz"
REAL_MASK = DATA / "liver_mask_3mm.nii.gz"
REAL_CT_FULL = DATA / "ct_abdomen_3mm_full_fov.nii.gz"


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Write ``data`` as NIfTI with ``affine`` (default 1 mm RAS)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def small_case(shape=(16, 12, 6), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A small stored-order (i, j, k) volume in HU and a label with liver and lesion."""
    rng = np.random.default_rng(seed)
    image = rng.normal(40, 10, shape).astype(np.int16)
    label = np.zeros(shape, np.uint8)
    label[3:10, 2:8, 1:5] = 1
    label[5:7, 4:6, 2:4] = 2
    return image, label


def reoriented_copy(src: Path, dest: Path, flip_axes=(), transpose=(0, 1, 2)) -> Path:
    """The same scan stored in another voxel order, with the affine that keeps it in place."""
    img = nib.load(str(src))
    arr = np.asanyarray(img.dataobj)
    affine = img.affine.copy()
    for axis in flip_axes:
        arr = np.flip(arr, axis)
        flip = np.eye(4)
        flip[axis, axis], flip[axis, 3] = -1, arr.shape[axis] - 1
        affine = affine @ flip
    arr = np.transpose(arr, transpose)
    perm = np.eye(4)
    perm[:3, :3] = np.eye(3)[:, list(transpose)]
    return write_nifti(dest, np.ascontiguousarray(arr), affine @ perm)
