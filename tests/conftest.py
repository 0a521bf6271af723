"""Shared fixtures: a private cache for every test session and small LiTS folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import REAL_CT, REAL_MASK, small_case, write_nifti

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("LIVERLIB_HEADLESS", "1")


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Keep the tests' phantom cohorts and slice caches out of the user's cache."""
    os.environ["LIVERLIB_CACHE"] = str(tmp_path_factory.mktemp("liverlib-cache"))


@pytest.fixture
def lits_dir(tmp_path: Path) -> Path:
    """A valid two-case LiTS folder."""
    root = tmp_path / "lits"
    for case_id in (0, 1):
        image, label = small_case(seed=case_id)
        write_nifti(root / f"volume-{case_id}.nii.gz", image)
        write_nifti(root / f"segmentation-{case_id}.nii.gz", label)
    return root


@pytest.fixture
def real_lits_dir(tmp_path: Path) -> Path:
    """The real CT of tests/data as a one-case LiTS folder (links, no copy)."""
    root = tmp_path / "real"
    root.mkdir()
    (root / "volume-0.nii.gz").symlink_to(REAL_CT.resolve())
    (root / "segmentation-0.nii.gz").symlink_to(REAL_MASK.resolve())
    return root
