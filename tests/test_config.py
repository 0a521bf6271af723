"""Profiles, --set overrides and config.yaml."""

from __future__ import annotations

import pytest
import yaml

from liverlib import config
from liverlib.errors import ConfigError


def test_profiles_share_every_key():
    base = config.resolve("paper")
    for name in config.PROFILES:
        cfg = config.resolve(name)
        assert cfg["profile"] == name
        assert set(cfg) == set(base)
        for section in ("data", "preprocess", "augment", "model", "train", "crf", "predict"):
            assert set(cfg[section]) == set(base[section])


def test_paper_profile_is_table_2():
    cfg = config.resolve("paper")
    assert cfg["preprocess"]["hu_window"] == [-100, 300]
    assert cfg["preprocess"]["size"] == 96
    assert cfg["model"] == {
        "base_filters": 64, "depth": 4, "dropout": 0.5, "pooling": "mixed", "mixed_inference": "expectation",
        "mixed_granularity": "channel", "normalization": "none", "output_prior": 0.5,
    }
    train = cfg["train"]
    assert train["lesion_foreground_fraction"] == 0.0  # the paper samples slices uniformly
    assert (train["loss"], train["learning_rate"], train["batch_size"], train["epochs"]) == ("bce", 1e-5, 32, 20)
    assert cfg["folds"] == 10


def test_smoke_and_default_are_smaller():
    smoke, default, paper = (config.resolve(p) for p in ("smoke", "default", "paper"))
    assert smoke["model"]["base_filters"] <= default["model"]["base_filters"] < paper["model"]["base_filters"]
    assert smoke["train"]["epochs"] * smoke["train"]["steps_per_epoch"] < default["train"]["epochs"] * default["train"]["steps_per_epoch"]
    assert smoke["data"]["phantom_cases"] >= smoke["folds"]


def test_set_overrides_are_typed_and_validated():
    cfg = config.resolve("smoke", ["train.epochs=3", "train.learning_rate=1e-3", "data.dir=/data/lits", "crf.enabled=false"])
    assert cfg["train"]["epochs"] == 3
    assert cfg["train"]["learning_rate"] == pytest.approx(1e-3)
    assert cfg["data"]["dir"] == "/data/lits"
    assert cfg["crf"]["enabled"] is False
    assert config.resolve("smoke", ["preprocess.roi_margin_mm=5"])["preprocess"]["roi_margin_mm"] == 5.0
    assert config.resolve("smoke", {"model.base_filters": 16})["model"]["base_filters"] == 16
    # predict.min_lesion_ml is a list of any length (candidates), of floats
    assert config.resolve("paper", ["predict.min_lesion_ml=[0, 0.5, 2]"])["predict"]["min_lesion_ml"] == [0.0, 0.5, 2.0]
    assert config.resolve("default", ["predict.min_lesion_ml=[0.3]"])["predict"]["min_lesion_ml"] == [0.3]


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.epochz=3", "unknown config key 'train.epochz'"),
        ("nothing=1", "unknown config key 'nothing'"),
        ("train.epochs=many", "expects type int"),
        ("train=3", "is a section"),
        ("preprocess.hu_window=[1, 2, 3]", "takes 2 values"),
        ("novalue", "KEY=VALUE"),
        ("lesion_stage.model.widht=3", "unknown config key 'lesion_stage.model.widht'"),
        ("lesion_stage.crf.iterations=3", "unknown config key 'lesion_stage.crf'"),
        ("lesion_stage.model.dropout=high", "expects type float"),
        ("lesion_stage.model=3", "is a section"),
        ("lesion_stage=3", "is a section"),
        ("predict.min_lesion_ml=[big]", "expects type float"),
        ("predict.min_lesion_ml=[]", "at least one value"),
        ("predict.min_lesion_ml=[0, -0.5]", "values >= 0.0"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError, match=message):
        config.resolve("default", [override])


def test_unknown_profile():
    with pytest.raises(ConfigError, match="unknown profile"):
        config.resolve("huge")


def test_config_yaml_round_trip(tmp_path):
    cfg = config.resolve("smoke", ["seed=5"])
    path = config.write_config(cfg, tmp_path / "run" / "config.yaml")
    assert yaml.safe_load(path.read_text()) == cfg == config.read_config(path)
    assert cfg["seed"] == 5


def test_lesion_stage_overrides_only_the_lesion_network():
    cfg = config.resolve("paper", ["lesion_stage.model.dropout=0", "lesion_stage.train.epochs=7", "model.dropout=0.25"])
    assert cfg["lesion_stage"] == {"model": {"dropout": 0.0}, "train": {"epochs": 7}}
    liver, lesion = config.stage_config(cfg, "liver"), config.stage_config(cfg, "lesion")
    assert (liver["model"]["dropout"], liver["train"]["epochs"]) == (0.25, 20)
    assert (lesion["model"]["dropout"], lesion["train"]["epochs"]) == (0.0, 7)
    assert lesion["model"]["base_filters"] == liver["model"]["base_filters"] == 64  # everything else is shared
    assert cfg["model"]["dropout"] == 0.25  # stage_config copies, never edits the run's config
    # A run folder written before the section existed trains both stages alike.
    old = {k: v for k, v in cfg.items() if k != "lesion_stage"}
    assert config.stage_config(old, "lesion")["model"] == old["model"]
    with pytest.raises(ValueError, match="stage"):
        config.stage_config(cfg, "kidney")



def test_runs_record_the_phantom_generator_and_refuse_another():
    from liverlib.data.phantoms import GENERATOR_VERSION
    from liverlib.data.sources import dataset_cases

    cfg = config.resolve("default")
    assert cfg["data"]["phantom_version"] == GENERATOR_VERSION
    old = config.resolve("default")
    del old["data"]["phantom_version"]  # a run made before the key: generator v1
    with pytest.raises(ValueError, match=f"generator v1, and this liverlib makes v{GENERATOR_VERSION}: start a new run"):
        dataset_cases(old)
