"""`liverlib bench`: the plumbing only (tiny sizes). Speed is never asserted here."""

from __future__ import annotations

import json

import keras
import pytest

from liverlib import bench
from liverlib.cpu import ISA_FLAGS, has_bf16_units
from liverlib.cli import main

KEYS = {
    "train_slices_per_s_mixed": float,
    "train_slices_per_s_max": float,
    "pipeline_ratio": float,
    "epoch_ratio": float,
    "train_gflops_per_s": float,
    "peak_gflops_per_s": float,
    "predict_s_per_volume": float,
    "predict_breakdown_s": dict,
    "predict_s_per_volume_bfloat16": float,
    "predict_breakdown_s_bfloat16": dict,
    "crf_s_per_volume": float,
    "preprocess_slices_per_s": float,
    "nifti_read_slices_per_s": float,
    "peak_rss_mb_small": float,
    "peak_rss_mb_large": float,
    "device": str,
    "cpu": dict,
    "backend": str,
    "versions": dict,
    "targets": dict,
    "seconds": float,
}


#: Whether this CPU runs the bfloat16 prediction (under TensorFlow it needs bfloat16 units).
BF16 = keras.backend.backend() != "tensorflow" or has_bf16_units()


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory, monkeypatch_module):
    """One quick benchmark run through the CLI, written to a file."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    monkeypatch_module.setattr(bench, "FULL", bench.QUICK)  # the CLI runs FULL sizes
    assert main(["bench", "--out", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_every_key_with_a_sane_value(quick_result):
    for key, kind in KEYS.items():
        if key.endswith("_bfloat16") and not BF16:
            assert quick_result[key] is None, key  # skipped on this CPU
            continue
        assert isinstance(quick_result[key], kind), key
    for key in KEYS:
        if KEYS[key] is float and quick_result[key] is not None:
            assert quick_result[key] > 0, key
    assert quick_result["backend"] == keras.backend.backend()
    cpu = quick_result["cpu"]
    assert cpu["model"] and cpu["model"] in quick_result["device"] and cpu["cores"] >= 1
    assert set(cpu["isa"]) <= set(ISA_FLAGS)
    assert quick_result["crf_s_per_volume"] == quick_result["predict_breakdown_s"]["crf"]
    versions = quick_result["versions"]
    for name in ("python", "numpy", "keras", keras.backend.backend(), "nibabel", "pydensecrf"):
        assert isinstance(versions[name], str) and versions[name], name


@pytest.mark.parametrize("suffix", ["", "_bfloat16"])
def test_predict_breakdown_fits_in_the_total_and_the_crf_ran(quick_result, suffix):
    if suffix and not BF16:
        pytest.skip("no bfloat16 units: the bfloat16 prediction is skipped")
    parts = quick_result["predict_breakdown_s" + suffix]
    total = quick_result["predict_s_per_volume" + suffix]
    assert set(parts) == {"stage1", "stage2", "network", "resample", "largest_component", "crf", "other", "warmup"}
    assert all(seconds >= 0 for seconds in parts.values()), parts
    # The library times the stages inside the call the total is measured around: they cannot exceed it.
    # (Every figure is rounded to 4 significant digits, hence the 1e-3 slack.)
    named = parts["stage1"] + parts["stage2"] + parts["largest_component"] + parts["crf"]
    assert named <= total * (1 + 1e-3)
    assert parts["network"] + parts["resample"] <= (parts["stage1"] + parts["stage2"]) * (1 + 1e-3)
    assert parts["other"] == pytest.approx(total - named, abs=1e-3 * total)  # "other" is the rest of the total
    assert parts["crf"] > 0 and parts["stage2"] > 0 and parts["largest_component"] > 0  # nothing was skipped
    assert parts["warmup"] > 0


def test_predict_stand_ins_give_the_phantoms_labels(quick_result):
    predicted = quick_result["details"]["predict"]
    assert predicted["liver_ml_predicted"] == pytest.approx(predicted["liver_ml_reference"], rel=0.2)
    fast = quick_result["details"]["predict_bfloat16"]
    if not BF16:
        assert fast == {"skipped": "no bfloat16 units"}
        return
    assert (predicted["precision"], fast["precision"]) == ("float32", "bfloat16")
    assert fast["liver_ml_predicted"] == pytest.approx(predicted["liver_ml_predicted"], rel=0.05)


def test_targets_match_the_values(quick_result):
    targets = quick_result["targets"]
    assert set(targets) == set(bench.TARGETS)
    r, d = quick_result, quick_result["details"]
    # Ratios are paired: the median over rounds of the ratio within each round.
    per_round = [a / b for a, b in zip(d["training"]["slices_per_s_mixed"], d["training"]["slices_per_s_max"])]
    assert targets["mixed_vs_max"]["value"] == pytest.approx(sorted(per_round)[0] / 2 + sorted(per_round)[1] / 2, rel=1e-2)
    assert targets["pipeline_ratio"]["value"] == pytest.approx(r["pipeline_ratio"], rel=1e-3)
    epochs = d["pipeline"]
    per_round = [s / e for s, e in zip(epochs["epoch_s_steps"], epochs["epoch_s_epoch"])]
    assert targets["epoch_ratio"]["value"] == pytest.approx(sorted(per_round)[len(per_round) // 2], rel=1e-2)
    assert targets["crf_s_per_volume"]["pass"] == (r["crf_s_per_volume"] <= 5)
    assert targets["preprocess_vs_nifti_read"]["value"] == pytest.approx(
        d["preprocess"]["read_s"][0] / d["preprocess"]["build_s"][0], rel=1e-2
    )
    assert targets["rss_large_vs_small"]["value"] == pytest.approx(r["peak_rss_mb_large"] / r["peak_rss_mb_small"], rel=1e-3)
    assert targets["predict_s_per_volume"]["pass"] == (r["predict_s_per_volume"] <= 30)
    for name, t in targets.items():
        assert isinstance(t["pass"], bool) or (name.endswith("_bfloat16") and not BF16)
    memory = quick_result["details"]["memory"]
    assert memory["large"]["cases"] == 4 * memory["small"]["cases"]


def test_stdout_holds_only_the_json(capsys, monkeypatch):
    canned = {"targets": {"a": {"pass": True}}, "seconds": 1.0}
    monkeypatch.setattr(bench, "measure", lambda sizes: canned)
    assert bench.run_benchmarks() == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == canned
    assert "targets met" in captured.err


def test_evaluate_targets_rules():
    values = {
        "train_slices_per_s_mixed": 90.0, "train_slices_per_s_max": 100.0,  # 0.9: pass
        "pipeline_ratio": 0.89,                                               # fail
        "train_gflops_per_s": 49.0, "peak_gflops_per_s": 100.0,               # fail
        "preprocess_slices_per_s": 50.0, "nifti_read_slices_per_s": 100.0,   # 0.5: pass
        "peak_rss_mb_small": 100.0, "peak_rss_mb_large": 121.0,              # fail
        "predict_s_per_volume": 30.0,                                         # pass
        "predict_s_per_volume_bfloat16": 30.5,                                # fail
        "epoch_ratio": 0.95,                                                  # pass
        "crf_s_per_volume": 5.1,                                              # fail
    }  # fmt: skip
    passed = {name: t["pass"] for name, t in bench.evaluate_targets(values).items()}
    assert passed == {
        "mixed_vs_max": True,
        "pipeline_ratio": False,
        "train_vs_peak_flops": False,
        "preprocess_vs_nifti_read": True,
        "rss_large_vs_small": False,
        "predict_s_per_volume": True,
        "predict_s_per_volume_bfloat16": False,
        "epoch_ratio": True,
        "crf_s_per_volume": False,
    }
    assert bench.evaluate_targets({})["pipeline_ratio"] == {"value": None, "target": ">= 0.9", "pass": None}
    # A paired ratio wins over the ratio of the medians.
    assert bench.evaluate_targets(values, {"mixed_vs_max": 0.8})["mixed_vs_max"]["pass"] is False


def test_conv_flops_counts_each_convolution():
    inputs = keras.Input((8, 6, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 2*8*6*3*3*3*4 = 10368
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(5, 1)(x)  # 2*4*3*1*1*4*5 = 480
    assert bench.conv_flops(keras.Model(inputs, x)) == 10368 + 480


def test_conv_flops_of_the_paper_unet():
    from liverlib.networks import mixed_unet

    # Hand count for base_filters=1, depth=1, 8x8 input: encoder 1->1, 1->1 at 8x8;
    # bottom 1->2, 2->2 at 4x4; up-conv (2x2) 2->1 at 8x8; decoder 2->1, 1->1 at 8x8; output 1x1 1->1.
    expected = 2 * (64 * 9 * 1 + 64 * 9 * 1 + 16 * 9 * 2 + 16 * 9 * 4 + 64 * 4 * 2 + 64 * 9 * 2 + 64 * 9 * 1 + 64 * 1)
    model = mixed_unet((8, 8, 1), base_filters=1, depth=1, dropout=0.0)
    assert bench.conv_flops(model) == expected


def test_stand_in_network_runs_the_model_and_serves_the_given_planes():
    import numpy as np

    from liverlib.bench.predict import StandInNetwork
    from liverlib.inference.predictor import predict_slices

    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(1, 1, activation="sigmoid")])
    outputs = np.arange(5 * 4 * 4, dtype=np.float32).reshape(5, 4, 4) / 80
    stand_in = StandInNetwork(model, outputs)
    got = predict_slices([stand_in], np.zeros((5, 4, 4, 1), np.float32), batch_size=2)
    np.testing.assert_array_equal(got, outputs)
    assert stand_in.served == 5
    with pytest.raises(RuntimeError, match="more than its 5 planes"):
        stand_in.predict_on_batch(np.zeros((1, 4, 4, 1), np.float32))
    with pytest.raises(ValueError, match="do not fit"):
        StandInNetwork(model, outputs[:, :3])


def test_bfloat16_prediction_is_skipped_on_a_cpu_without_bfloat16_units(monkeypatch):
    calls = []

    def phantoms(default, sizes, log, result, details, paired):
        result.update({key: 1.0 for key in bench.FIGURES})
        return {"device": "cpu", "backend": "tensorflow", "versions": {}}

    def predict(cfg, sizes, log, precision="float32"):
        calls.append(precision)
        return {"predict_s_per_volume": 2.0, "predict_breakdown_s": {"crf": 1.0}, "details": {}}

    monkeypatch.setattr(bench, "_measure_on_phantoms", phantoms)
    monkeypatch.setattr(bench, "bench_predict", predict)
    monkeypatch.setattr(bench, "has_bf16_units", lambda: False)
    result = bench.measure(bench.QUICK, log=lambda line: None)
    assert calls == ["float32"] and result["predict_s_per_volume_bfloat16"] is None
    assert result["targets"]["predict_s_per_volume_bfloat16"]["pass"] is None
    assert result["crf_s_per_volume"] == 1.0 and result["details"]["predict_bfloat16"] == {"skipped": "no bfloat16 units"}
    monkeypatch.setattr(bench, "has_bf16_units", lambda: True)
    assert bench.measure(bench.QUICK, log=lambda line: None)["predict_s_per_volume_bfloat16"] == 2.0
    assert calls == ["float32", "float32", "bfloat16"]


def test_scale_bench_measures_each_step_for_one_and_four_cases(tmp_path):
    """`liverlib bench --scale` on tiny LiTS-geometry volumes: every step runs, and streams."""
    from liverlib.bench.scale import STEPS, bench_scale

    result = bench_scale(tmp_path, cases=((16, 5.0), (12, 5.0), (12, 4.0), (10, 5.0)), log=lambda line: None)
    assert [p["shape"] for p in result["phantoms"]] == [[16, 512, 512], [12, 512, 512], [12, 512, 512], [10, 512, 512]]
    four = result["four_cases"]
    assert [r["planes"] for r in four["predict"]["cases"]] == [16, 12, 12, 10]
    assert len(four["evaluate"]["seconds_per_case"]) == 4 and four["cache"]["planes"] == 50
    assert result["one_case"]["cache"]["planes"] == 16
    for step in STEPS:
        peaks = result["peak_rss_mb"][step]
        # the cache build starts its worker processes only for more than one case
        bound = (1 + four["cache"]["workers"]) if step == "cache" else 1.5
        assert 100 < peaks["one_case"] and peaks["four_cases"] < bound * peaks["one_case"], (step, peaks)
        assert result["lits_extrapolated_h"][step] == pytest.approx(result["seconds_per_plane"][step] * 58638 / 3600)
    # every case was predicted and its labels written where the evaluation found them
    assert len(list((tmp_path / "four_cases" / "run").rglob("segmentation-*.nii.gz"))) == 8
