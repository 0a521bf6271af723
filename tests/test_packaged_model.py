"""The model pair in the package: `liverlib predict` without a run, its manifest, and how `make model` writes it."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from liverlib import data
from liverlib.cli import main
from liverlib.evaluation.metrics import dice
from liverlib.runfolder import PACKAGED_MANIFEST, RunFolder, packaged_model_dir, read_manifest

DATA = Path(__file__).parent / "data"


def _has_optimizer_state(path: Path) -> bool:
    """Whether a .keras file stores optimizer variables (the "optimizer" group of its weights file)."""
    import h5py

    with zipfile.ZipFile(path) as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as weights:
        return "optimizer" in weights


def test_manifest_says_what_the_packaged_model_is():
    manifest = read_manifest()
    assert manifest["profile"] == "default" and "phantom" in manifest["data"]
    assert len(manifest["training_cases"]) == 40 and manifest["commit"]
    scans = {row["scan"]: row for row in manifest["real_ct"]}
    assert {"ct_abdomen_3mm", "ct_abdomen_2mm_512"} <= set(scans)
    assert all(0.0 <= row["liver_dice"] <= 1.0 for row in scans.values())
    # Weights only: a few MB, and no optimizer variables in the files.
    assert manifest["weights_mb"] < 8
    for stage in ("liver", "lesion"):
        path = RunFolder(packaged_model_dir()).model_file(0, stage)
        assert path.is_file() and not _has_optimizer_state(path)


def test_predict_without_a_run_uses_the_packaged_model(tmp_path, capsys):
    out = tmp_path / "seg.nii.gz"
    assert main(["predict", str(DATA / "ct_abdomen_3mm.nii.gz"), str(out)]) == 0
    assert "no --run: the packaged model" in capsys.readouterr().out
    _, _, geometry = data.load_image(DATA / "ct_abdomen_3mm.nii.gz")
    labels = data.load_label(out, geometry)
    reference = data.load_label(DATA / "liver_mask_3mm.nii.gz", geometry) > 0
    recorded = {row["scan"]: row["liver_dice"] for row in read_manifest()["real_ct"]}["ct_abdomen_3mm"]
    assert dice(labels > 0, reference) == pytest.approx(recorded, abs=0.002)  # what the manifest claims


def test_missing_packaged_model_is_one_line(tmp_path, capsys, monkeypatch):
    import liverlib.inference.scan as scan

    monkeypatch.setattr(scan, "packaged_model_dir", lambda: tmp_path / "nothing")
    assert main(["predict", str(DATA / "ct_abdomen_3mm.nii.gz"), str(tmp_path / "o.nii.gz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "make model" in err[0]


def test_optimizer_state_is_seen_where_it_is_saved(tmp_path):
    import keras
    import numpy as np

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.ones((4, 2)), np.ones((4, 1)), verbose=0)
    model.save(tmp_path / "trained.keras")
    assert _has_optimizer_state(tmp_path / "trained.keras")


def test_make_model_writes_a_weights_only_run_folder_with_a_manifest(tmp_path, monkeypatch):
    from liverlib.training.packaged import train_packaged_model

    monkeypatch.setenv("LIVERLIB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "pretrained"
    (out / "stale").mkdir(parents=True)  # a previous model's leftovers go
    manifest = train_packaged_model(out, "smoke", ["train.epochs=1", "train.steps_per_epoch=1"], real_ct=DATA, verbose=0)
    assert not (out / "stale").exists() and not (out / "predictions").exists()
    assert read_manifest(out) == manifest and (out / PACKAGED_MANIFEST).is_file()
    assert manifest["training_cases"] == list(range(10)) and manifest["overrides"] == ["train.epochs=1", "train.steps_per_epoch=1"]
    assert {row["scan"] for row in manifest["real_ct"]} >= {"ct_abdomen_3mm", "ct_abdomen_2mm_512"}
    for stage in ("liver", "lesion"):
        assert not _has_optimizer_state(RunFolder(out).model_file(0, stage))
