"""Whole-volume inference, `liverlib predict`, and the cross-validated predictions.

The networks are stand-ins whose output is a known function of the input: a
1x1 convolution with a sigmoid, ``sigmoid(k * (x - t))``, segments the pixels
whose network input ``x`` (gray level / 255) exceeds ``t``. They are plain
Keras layers, saved and loaded like the real models. With 96 x 96 planes the
stage-1 resize is the identity, a huge ``preprocess.roi_margin_mm`` makes the
stage-2 ROI the whole plane (identity again), and with ``preprocess.equalize:
false`` the gray level is the HU window mapped linearly, so the expected labels
are exact:
air (-1000 HU) -> 0.0, liver (100 HU) -> 0.5, lesion (250 HU) -> 0.875.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from stub_models import SIZE, lesion_stub, liver_stub, make_run, stub
from support import REAL_CT, reoriented_copy, write_nifti

from liverlib import config, data
from liverlib import inference
from liverlib.cpu import has_bf16_units
from liverlib.evaluation import run as run_scores
from liverlib.inference import postprocess
from liverlib.runfolder import RunFolder
from liverlib.cli import main
from liverlib.errors import LiverlibError
from liverlib.runfolder import load_run

# Exact test volume, canonical (plane, row, column): a liver block with a lesion, and a
# small separate "liver-like" blob that the largest-component rule must drop.
LIVER = (slice(2, 10), slice(20, 60), slice(20, 60))
LESION = (slice(4, 7), slice(30, 40), slice(30, 40))
BLOB = (slice(2, 4), slice(80, 86), slice(80, 86))


# --------------------------------------------------------------------------- helpers


def smoke_cfg(**overrides) -> dict:
    """The smoke profile on SIZE x SIZE network slices, the stub networks' input."""
    return config.resolve("smoke", {"preprocess.size": SIZE, **overrides})


def exact_cfg(**overrides) -> dict:
    """The smoke profile with the linear gray mapping and a whole-plane stage-2 ROI (exact expectations)."""
    return smoke_cfg(**{"preprocess.equalize": False, "preprocess.roi_margin_mm": 1000.0, **overrides})


def phantom_volume() -> np.ndarray:
    image = np.full((12, SIZE, SIZE), -1000.0, np.float32)
    image[LIVER] = 100.0
    image[LESION] = 250.0
    image[BLOB] = 100.0
    return image


def expected_labels(blob: bool = False) -> np.ndarray:
    labels = np.zeros((12, SIZE, SIZE), np.uint8)
    labels[LIVER] = 1
    labels[LESION] = 2
    if blob:
        labels[BLOB] = 1
    return labels


@pytest.fixture(scope="module")
def exact_run(tmp_path_factory) -> Path:
    """fold 0: the exact stubs; fold 1: a liver net that says 0.8 everywhere."""
    root = tmp_path_factory.mktemp("run")
    return make_run(root, {0: (liver_stub(), lesion_stub()), 1: (stub(constant=0.8), lesion_stub())}, exact_cfg())


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    """The smoke profile as it is (histogram equalization on) with bright-pixel stubs."""
    root = tmp_path_factory.mktemp("realrun")
    return make_run(root, {0: (stub(threshold=0.75), stub(threshold=0.97))}, smoke_cfg())


# --------------------------------------------------------------------------- one volume


def test_two_stages_exact_with_largest_component():
    models = [(liver_stub(), lesion_stub())]
    labels, probs = inference.predict_volume(phantom_volume(), (2.0, 1.0, 1.0), models, exact_cfg(), use_crf=False,
                                             return_probabilities=True)
    assert labels.dtype == np.uint8 and labels.shape == (12, SIZE, SIZE)
    np.testing.assert_array_equal(labels, expected_labels(blob=False))
    assert probs["liver_prob"][BLOB].max() == 0.0  # the dropped component cannot come back in the CRF
    assert probs["liver_prob"][LIVER].min() > 0.99
    assert probs["lesion_prob"][LESION].min() > 0.99


def test_without_largest_component_the_blob_stays():
    cfg = exact_cfg(**{"predict.largest_component": False})
    labels = inference.predict_volume(phantom_volume(), (2.0, 1.0, 1.0), [(liver_stub(), lesion_stub())], cfg, use_crf=False)
    np.testing.assert_array_equal(labels, expected_labels(blob=True))


def test_crf_keeps_a_crisp_edge_aligned_segmentation():
    labels = inference.predict_volume(phantom_volume(), (2.0, 1.0, 1.0), [(liver_stub(), lesion_stub())], exact_cfg())
    expected = expected_labels()
    assert set(np.unique(labels)) == {0, 1, 2}
    for value in (1, 2):
        pred, ref = labels >= value, expected >= value
        assert 2 * (pred & ref).sum() / (pred.sum() + ref.sum()) > 0.97


def test_lesion_only_inside_the_liver():
    # A lesion network that says "lesion" everywhere in the ROI (liver and surroundings).
    models = [(liver_stub(), stub(constant=0.99))]
    cfg = exact_cfg()
    plain = inference.predict_volume(phantom_volume(), (2.0, 1.0, 1.0), models, cfg, use_crf=False)
    expected = (expected_labels() > 0).astype(np.uint8) * 2
    np.testing.assert_array_equal(plain, expected)  # all of the liver, nothing outside
    refined = inference.predict_volume(phantom_volume(), (2.0, 1.0, 1.0), models, cfg, use_crf=True)
    assert refined.max() <= 2 and not np.any((refined == 2) & (expected == 0))


@pytest.mark.parametrize("use_crf", [False, True])
def test_no_liver_gives_zeros(use_crf):
    air = np.full((5, SIZE, SIZE), -1000.0, np.float32)
    labels, probs = inference.predict_volume(air, (3.0, 1.0, 1.0), [(liver_stub(), stub(constant=0.99))], exact_cfg(),
                                             use_crf=use_crf, return_probabilities=True)
    assert labels.shape == air.shape and labels.dtype == np.uint8 and not labels.any()
    assert not probs["lesion_prob"].any()  # stage 2 skipped
    # a network that finds nothing, on a body-like volume
    labels = inference.predict_volume(phantom_volume(), (2.0, 1.0, 1.0), [(stub(constant=0.01), stub(constant=0.99))],
                                      exact_cfg(), use_crf=use_crf)
    assert not labels.any()


def test_ensemble_is_the_mean_of_the_folds(exact_run):
    cfg = exact_cfg(**{"predict.largest_component": False})
    image = phantom_volume()
    single = [inference.predict_volume(image, (2.0, 1.0, 1.0), inference.load_models(exact_run, k), cfg,
                                       use_crf=False, return_probabilities=True)[1] for k in (0, 1)]
    models = inference.load_models(exact_run)
    assert len(models) == 2
    _, both = inference.predict_volume(image, (2.0, 1.0, 1.0), models, cfg, use_crf=False, return_probabilities=True)
    np.testing.assert_allclose(both["liver_prob"], (single[0]["liver_prob"] + single[1]["liver_prob"]) / 2, atol=1e-6)
    np.testing.assert_allclose(single[1]["liver_prob"], 0.8, atol=1e-5)


def test_network_input_scaling_matches_training():
    from liverlib.data.dataset import SliceDataset

    gray = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    x_train, _ = SliceDataset((gray, gray), batch_size=1, shuffle=False)[0]
    np.testing.assert_array_equal(inference.network_input(gray), x_train)




def test_mixed_unet_models_load_and_predict(tmp_path):
    from liverlib.networks import mixed_unet

    keras.utils.set_random_seed(0)
    run = make_run(tmp_path / "run", {0: (mixed_unet(base_filters=2), mixed_unet(base_filters=2))}, smoke_cfg())
    image, spacing, _ = data.load_image(REAL_CT)
    labels = inference.predict_volume(image, spacing, inference.load_models(run), smoke_cfg())
    assert labels.shape == image.shape and set(np.unique(labels)) <= {0, 1, 2}


# --------------------------------------------------------------------------- files and the command line


def test_predict_file_keeps_geometry_of_any_stored_orientation(real_run, tmp_path, capsys):
    variants = {
        "stored": REAL_CT,
        "flipped": reoriented_copy(REAL_CT, tmp_path / "flipped.nii.gz", flip_axes=(0, 2)),
        "permuted": reoriented_copy(REAL_CT, tmp_path / "permuted.nii", flip_axes=(1,), transpose=(2, 0, 1)),
    }
    canonical = {}
    for name, path in variants.items():
        out = inference.predict_file(path, tmp_path / f"pred-{name}.nii.gz", real_run)
        src, pred = nib.load(str(path)), nib.load(str(out))
        assert pred.shape == src.shape
        np.testing.assert_allclose(pred.affine, src.affine, atol=1e-5)
        assert nib.aff2axcodes(pred.affine) == nib.aff2axcodes(src.affine)
        assert pred.get_data_dtype() == np.uint8
        canonical[name] = data.load_label(out)
    assert nib.aff2axcodes(nib.load(str(variants["permuted"])).affine) != ("R", "A", "S")
    assert canonical["stored"].any() and set(np.unique(canonical["stored"])) <= {0, 1, 2}
    for name in ("flipped", "permuted"):
        np.testing.assert_array_equal(canonical[name], canonical["stored"])
    printed = capsys.readouterr().out
    assert "stage 1 (liver)" in printed and "stage 2 (lesion)" in printed and "CRF" in printed and " s" in printed


def test_predict_file_air_volume_writes_zeros(real_run, tmp_path):
    affine = np.diag([-0.8, 0.8, 2.5, 1.0])
    src = write_nifti(tmp_path / "air.nii.gz", np.full((40, 30, 7), -1000, np.int16), affine)
    out = inference.predict_file(src, tmp_path / "air-seg.nii", real_run)
    pred = nib.load(str(out))
    assert pred.shape == (40, 30, 7) and not np.asanyarray(pred.dataobj).any()
    np.testing.assert_allclose(pred.affine, affine)


def test_cli_predict(exact_run, tmp_path, capsys):
    src = tmp_path / "volume-1.nii.gz"
    data.save_like(phantom_volume(), data.Geometry(np.diag([1.0, 1.0, 2.0, 1.0]), (SIZE, SIZE, 12), ("R", "A", "S")),
                   src, dtype=np.int16)
    outs = {}
    variants = {"all": [], "fold0": ["--fold", "0"], "fold1": ["--fold", "1"],
                "bf16": ["--fold", "0", "--precision", "bfloat16"]}  # fmt: skip
    if keras.backend.backend() == "tensorflow" and not has_bf16_units():
        del variants["bf16"]  # refused on this CPU: test_cli_predict_errors
    for name, extra in variants.items():
        out = tmp_path / f"seg-{name}.nii.gz"
        assert main(["predict", str(src), str(out), "--run", str(exact_run), "--no-crf", *extra]) == 0
        outs[name] = data.load_label(out)
    np.testing.assert_array_equal(outs["fold0"], expected_labels())
    np.testing.assert_array_equal(outs.get("bf16", expected_labels()), expected_labels())
    np.testing.assert_array_equal(outs["all"], expected_labels())  # mean of 1 and 0.8 in the liver, 0.4 outside
    assert (outs["fold1"] > 0).all()  # fold 1 alone: 0.8 everywhere
    assert main(["predict", str(src), str(tmp_path / "seg-crf.nii.gz"), "--run", str(exact_run), "--fold", "0"]) == 0
    assert "wrote" in capsys.readouterr().out


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err + captured.out
    return lines[0]


def test_cli_predict_errors(exact_run, tmp_path, capsys, monkeypatch):
    ct = str(REAL_CT)
    if keras.backend.backend() == "tensorflow":  # bfloat16 on a CPU without bfloat16 units: one line, nothing written
        from liverlib.networks import io

        monkeypatch.setattr(io, "has_bf16_units", lambda: False)
        out = tmp_path / "bf16.nii.gz"
        assert main(["predict", ct, str(out), "--run", str(exact_run), "--precision", "bfloat16"]) == 2
        assert "bfloat16 units" in _one_error_line(capsys) and not out.exists()
        monkeypatch.undo()
    missing = tmp_path / "no-run"
    assert main(["predict", ct, str(tmp_path / "o.nii.gz"), "--run", str(missing)]) == 2
    assert str(missing) in _one_error_line(capsys)

    empty = tmp_path / "empty-run"
    empty.mkdir()
    assert main(["predict", ct, str(tmp_path / "o.nii.gz"), "--run", str(empty)]) == 2
    assert "no trained models here" in _one_error_line(capsys)

    assert main(["predict", ct, str(tmp_path / "o.nii.gz"), "--run", str(exact_run), "--fold", "7"]) == 2
    assert "no fold 7" in _one_error_line(capsys)

    text = tmp_path / "notes.txt"
    text.write_text("not a CT")
    assert main(["predict", str(text), str(tmp_path / "o.nii.gz"), "--run", str(exact_run)]) == 2
    assert str(text) in _one_error_line(capsys)

    truncated = tmp_path / "cut.nii.gz"
    truncated.write_bytes(REAL_CT.read_bytes()[:5000])
    assert main(["predict", str(truncated), str(tmp_path / "o.nii.gz"), "--run", str(exact_run)]) == 2
    assert str(truncated) in _one_error_line(capsys)

    assert main(["predict", ct, str(tmp_path / "o.png"), "--run", str(exact_run)]) == 2
    assert ".nii or .nii.gz" in _one_error_line(capsys)
    assert not list(tmp_path.glob("o.*")) and not list(tmp_path.glob(".o*"))  # nothing half-written


def test_incomplete_fold_is_named(tmp_path):
    run = make_run(tmp_path / "run", {0: (liver_stub(), lesion_stub())}, exact_cfg())
    (run / "models" / "fold-0" / "lesion.keras").unlink()
    with pytest.raises(LiverlibError, match="fold 0 has no lesion model"):
        inference.load_models(run)


# --------------------------------------------------------------------------- cross-validated predictions


@pytest.fixture
def cv_run(tmp_path) -> tuple[Path, list[data.CaseFiles]]:
    """Three labelled cases, two folds; fold 1's liver net marks everything, so its cases are recognisable."""
    cases_dir = tmp_path / "cases"
    orientations = [np.diag([1.0, 1.0, 2.0, 1.0]), np.diag([-1.0, 1.0, 2.0, 1.0]), np.diag([1.0, -1.0, -2.0, 1.0])]
    for case_id, affine in enumerate(orientations):
        geometry = data.Geometry(affine, (SIZE, SIZE, 12), tuple(nib.aff2axcodes(affine)))
        data.save_like(phantom_volume(), geometry, cases_dir / f"volume-{case_id}.nii.gz", dtype=np.int16)
        data.save_like(expected_labels(), geometry, cases_dir / f"segmentation-{case_id}.nii.gz")
    run = make_run(tmp_path / "run", {0: (liver_stub(), lesion_stub()), 1: (stub(constant=0.8), lesion_stub())},
                   exact_cfg())
    folds = [{"fold": 0, "train": [2], "val": [], "test": [0, 1]}, {"fold": 1, "train": [0, 1], "val": [], "test": [2]}]
    (run / "splits.json").write_text(json.dumps({"folds": folds}))
    return run, data.discover(cases_dir)


def test_predict_cases_uses_each_folds_own_models_and_resumes(cv_run):
    run, cases = cv_run
    timing = inference.predict_cases(run, cases, progress=False)
    assert sorted(timing["case"]) == [0, 1, 2] and list(timing.sort_values("case")["fold"]) == [0, 0, 1]
    assert (timing[["network_s", "crf_s", "total_s"]] >= 0).all().all()
    for files in cases:
        paths = [RunFolder(run).prediction(files.case_id, crf) for crf in (0, 1)]
        ref = nib.load(str(files.label))
        for path in paths:
            pred = nib.load(str(path))
            assert pred.shape == ref.shape and np.allclose(pred.affine, ref.affine)
        before = data.load_label(paths[0])
        if files.case_id in (0, 1):  # fold 0's models: the exact answer
            np.testing.assert_array_equal(before, expected_labels())
        else:  # fold 1's models: liver everywhere
            assert (before > 0).all()
    stamps = {p: p.stat().st_mtime_ns for p in (run / "predictions").rglob("*.nii.gz")}
    again = inference.predict_cases(run, cases, progress=False)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # resumed: nothing predicted twice
    pd.testing.assert_frame_equal(again, timing)


def test_label_workers_give_the_same_predictions_as_one_process(cv_run):
    run, cases = cv_run
    cfg = load_run(run)
    folds = json.loads((run / "splits.json").read_text())["folds"]
    folds[0]["val"] = [2]  # the validation scans' CRFs run in the pool too
    (run / "splits.json").write_text(json.dumps({"folds": folds}))
    cfg["predict"]["min_lesion_ml"] = [0.0, 1.0]
    files = {}
    for workers in (0, 2):
        cfg["predict"]["label_workers"] = workers
        shutil.rmtree(run / "predictions", ignore_errors=True)
        (run / "models" / "fold-0" / "postprocessing.json").unlink(missing_ok=True)
        timing = inference.predict_cases(run, cases, cfg=cfg, progress=False)
        assert sorted(timing["case"]) == [0, 1, 2] and (timing[["network_s", "crf_s", "total_s"]] >= 0).all().all()
        files[workers] = {p.relative_to(run): data.load_label(p) for p in (run / "predictions").rglob("*.nii.gz")}
        files[workers]["choice"] = (run / "models" / "fold-0" / "postprocessing.json").read_text()
    assert files[0].keys() == files[2].keys() and len(files[0]) == 7
    for key, value in files[0].items():
        np.testing.assert_array_equal(files[2][key], value)


def test_label_workers_keep_order_bound_the_queue_and_raise_errors():
    from liverlib.inference.workers import LabelWorkers

    seen = []
    with LabelWorkers(2) as pool:
        for n in range(5):
            pool.submit(pow, n, 2, done=seen.append)
            assert len(pool._pending) <= 2  # never more cases in flight than workers
    assert seen == [0, 1, 4, 9, 16]  # in submission order, all done on exit
    with pytest.raises(ZeroDivisionError):
        with LabelWorkers(1) as pool:
            pool.submit(divmod, 1, 0)
            pool.drain()
    with pytest.raises(ValueError, match="workers must be >= 0"):
        LabelWorkers(-1)


def test_predict_cases_fold_selection_and_resume_of_a_missing_file(cv_run):
    run, cases = cv_run
    inference.predict_cases(run, cases, folds=[1], progress=False)
    assert inference.prediction_complete(run, 2) and not inference.prediction_complete(run, 0)
    RunFolder(run).prediction(2, 1).unlink()
    timing = inference.predict_cases(run, cases, folds="all", progress=False)
    assert sorted(timing["case"]) == [0, 1, 2] and all(inference.prediction_complete(run, c) for c in (0, 1, 2))


def test_score_run_and_crf_effect(cv_run):
    run, cases = cv_run
    with pytest.raises(LiverlibError, match="no prediction for test case 0 of fold 0"):
        run_scores.score_run(run, cases=cases, workers=1, progress=False)
    inference.predict_cases(run, cases, progress=False)
    scores = run_scores.score_run(run, cases=cases, workers=1, progress=False)
    pd.testing.assert_frame_equal(run_scores.read_metrics(run), scores, check_dtype=False)
    assert len(scores) == 3 * 2 * 2 and set(scores["crf"]) == {0, 1}
    before = scores[(scores["crf"] == 0)].set_index(["case", "structure"])["dice"]
    assert before[(0, "liver")] == 1.0 and before[(1, "lesion")] == 1.0
    liver_blocks = (expected_labels() > 0).sum()
    assert before[(2, "liver")] == pytest.approx(2 * liver_blocks / (liver_blocks + SIZE * SIZE * 12))
    effect = run_scores.crf_effect(scores, decimals=None)
    assert list(effect["structure"]) == ["liver", "lesion"] and list(effect["cases"]) == [3, 3]
    assert effect.loc[0, "dice_before"] == pytest.approx(before.xs("liver", level="structure").mean())
    assert effect.loc[0, "dice_change"] == pytest.approx(effect.loc[0, "dice_after"] - effect.loc[0, "dice_before"])
    rounded = run_scores.crf_effect(scores)
    assert rounded.loc[0, "dice_before"] == round(effect.loc[0, "dice_before"], 4)
    written = run_scores.score_run(run, folds=[1], cases=cases, workers=1, progress=False)
    assert set(written["case"]) == {2} and len(run_scores.read_metrics(run)) == 4
    assert run_scores.most_changed_case(scores) in (0, 1, 2)
    example = run_scores.load_before_after(run, cases[0])
    assert example["image"].shape == example["before"].shape == example["reference"].shape


def test_each_fold_chooses_its_minimum_lesion_volume_on_validation_scans(cv_run):
    run, cases = cv_run
    folds = json.loads((run / "splits.json").read_text())["folds"]
    folds[0]["val"] = [2]  # fold 0's own models segment scan 2 exactly: its 0.6 mL lesion included
    (run / "splits.json").write_text(json.dumps({"folds": folds}))
    cfg = load_run(run)
    cfg["predict"]["min_lesion_ml"] = [0.0, 1.0]
    inference.predict_cases(run, cases, cfg=cfg, progress=False)
    chosen = json.loads((run / "models" / "fold-0" / "postprocessing.json").read_text())
    assert chosen == {"min_lesion_ml": 0.0, "validation_cases": [2], "mean_lesion_dice": {"0.0": 1.0, "1.0": 0.0}}
    np.testing.assert_array_equal(data.load_label(RunFolder(run).prediction(0, 1)), expected_labels())
    # A single candidate is applied as it is: 1 mL removes the lesion, which becomes liver.
    for files in cases:
        RunFolder(run).prediction(files.case_id, 1).unlink()
    cfg["predict"]["min_lesion_ml"] = [1.0]
    inference.predict_cases(run, cases, cfg=cfg, progress=False)
    after = data.load_label(RunFolder(run).prediction(0, 1))
    np.testing.assert_array_equal(after, (expected_labels() > 0).astype(np.uint8))


def test_predict_file_applies_the_folds_median_choice(tmp_path, capsys):
    run = make_run(tmp_path / "run", {0: (liver_stub(), lesion_stub()), 1: (liver_stub(), lesion_stub()),
                                      2: (liver_stub(), lesion_stub())}, exact_cfg())
    src = tmp_path / "volume-1.nii.gz"  # spacing 1 x 1 x 2 mm: the lesion is 3 x 10 x 10 voxels, 0.6 mL
    data.save_like(phantom_volume(), data.Geometry(np.diag([1.0, 1.0, 2.0, 1.0]), (SIZE, SIZE, 12), ("R", "A", "S")),
                   src, dtype=np.int16)
    for fold, min_ml in [(0, 0.0), (1, 1.0), (2, 0.5)]:
        postprocess.write_choice(run, fold, min_ml, {str(min_ml): 1.0}, [])
    out = inference.predict_file(src, tmp_path / "median.nii.gz", run, use_crf=False)  # median 0.5 mL keeps it
    np.testing.assert_array_equal(data.load_label(out), expected_labels())
    postprocess.write_choice(run, 2, 1.0, {"1.0": 1.0}, [])  # median 1 mL removes it: it becomes liver
    out = inference.predict_file(src, tmp_path / "median1.nii.gz", run, use_crf=False)
    np.testing.assert_array_equal(data.load_label(out), (expected_labels() > 0).astype(np.uint8))
    assert "lesion components under 1 mL removed" in capsys.readouterr().out


def test_timings_record_each_stage_within_the_wall_time():
    import time

    stages = ("stage1", "largest_component", "stage2", "crf")  # one after the other, inside the call
    models = [(liver_stub(), lesion_stub())]
    timings: dict[str, float] = {}
    start = time.perf_counter()
    inference.predict_volume(phantom_volume(), (2.0, 1.0, 1.0), models, exact_cfg(), timings=timings)
    wall = time.perf_counter() - start
    assert set(timings) == {*stages, "network", "resample"}
    assert all(seconds >= 0 for seconds in timings.values()), timings
    assert sum(timings[k] for k in stages) <= wall
    assert timings["network"] + timings["resample"] <= timings["stage1"] + timings["stage2"]  # parts of the stages
    # A second call adds to the same record.
    first = dict(timings)
    inference.predict_volume(phantom_volume(), (2.0, 1.0, 1.0), models, exact_cfg(), timings=timings)
    assert all(timings[k] > first[k] for k in first), (first, timings)
