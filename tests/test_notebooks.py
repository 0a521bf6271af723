"""The whole story, headless: `liverlib run --profile smoke` executes notebooks 01-08.

This is the slowest test (about 5 minutes on 2 plain AVX2 cores): it trains 5 folds
x 2 stages of the tiny smoke model on a phantom cohort and checks the paper's
tables and figures come back, and that the model learned the liver. Its only time
limit is a hang guard: how long a training run takes depends on the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from liverlib.config import resolve
from liverlib.runner import NOTEBOOKS

ROOT = Path(__file__).resolve().parents[1]
HANG_GUARD_S = 3600  # not a speed test: only a run that hangs fails on time


def test_notebooks_are_committed_clean():
    for name in NOTEBOOKS:
        nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert not any(c.outputs for c in code), f"{name} has outputs"
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{name} needs exactly one parameters cell"
        assert nb.cells.index(tagged[0]) < nb.cells.index(code[1]), f"{name}: parameters come first"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    exe = Path(sys.executable).parent / "liverlib"
    result = subprocess.run([str(exe), "run", "--profile", "smoke", "--out", str(run_dir)],
                            capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


@pytest.mark.slow
def test_smoke_run_regenerates_tables_and_figures(smoke_run):
    run_dir, _ = smoke_run
    for name in NOTEBOOKS:
        assert (run_dir / "notebooks" / f"{name}.ipynb").is_file()
    folds = json.loads((run_dir / "splits.json").read_text())["folds"]
    k = resolve("smoke")["folds"]
    assert len(folds) == k
    metrics = pd.read_csv(run_dir / "tables" / "metrics.csv")
    assert set(metrics["fold"]) == set(range(k))
    assert set(metrics["crf"]) == {0, 1} and set(metrics["structure"]) == {"liver", "lesion"}
    assert sorted(metrics["case"].unique()) == sorted(c for f in folds for c in f["test"])
    table = pd.read_csv(run_dir / "tables" / "dice_10fold.csv", index_col=0)
    assert [f"fold {fold}" for fold in range(k)] == list(table.index[:k])
    real = pd.read_csv(run_dir / "tables" / "real_ct.csv")
    assert sorted(real["scan"]) == ["ct_abdomen_2mm_512", "ct_abdomen_2mm_512-liver-crop", "ct_abdomen_3mm",
                                    "ct_abdomen_3mm-liver-crop"] and real["liver_dice"].between(0, 1).all()
    for name in ("fig1_samples", "fig6_training_input_liver", "training_curves_liver", "crf_before_after",
                 "evaluation_prediction_vs_reference", "dice_per_fold", "real_ct_predictions"):
        assert (run_dir / "figures" / f"{name}.png").stat().st_size > 10_000
    for fold in range(k):
        for model in ("liver.keras", "lesion.keras", "history.csv"):
            assert (run_dir / "models" / f"fold-{fold}" / model).is_file()


@pytest.mark.slow
def test_smoke_run_learns_the_liver(smoke_run):
    run_dir, _ = smoke_run
    metrics = pd.read_csv(run_dir / "tables" / "metrics.csv")
    liver = metrics[(metrics["structure"] == "liver") & (metrics["crf"] == 0)]
    # Chance: calling every voxel of the volume liver gives Dice ~ 2p/(1+p), p ~ 3% of the voxels.
    assert liver["dice"].mean() > 0.5


@pytest.mark.slow
def test_rerun_resumes_and_changed_config_is_refused(smoke_run):
    run_dir, _ = smoke_run
    exe = Path(sys.executable).parent / "liverlib"
    again = subprocess.run([str(exe), "run", "--profile", "smoke", "--out", str(run_dir)],
                           capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert again.returncode == 0 and again.stdout.count("complete, skipped") == len(NOTEBOOKS)
    other = subprocess.run([str(exe), "run", "--profile", "smoke", "--out", str(run_dir), "--set", "train.epochs=9"],
                           capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert other.returncode == 2 and "another config (train.epochs)" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1
    # The executor says where a run computes, not what: resuming under another one is allowed.
    elsewhere = subprocess.run([str(exe), "run", "--profile", "smoke", "--out", str(run_dir), "--set", "executor.retries=5"],
                               capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert elsewhere.returncode == 0 and elsewhere.stdout.count("complete, skipped") == len(NOTEBOOKS)
