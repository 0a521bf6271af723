"""Profiles, ``--set`` overrides and the run's ``config.yaml``.

The profiles live in ``profiles.yaml`` next to this module: a ``base`` with
every key and three profiles (``smoke``, ``default``, ``paper``) that override
some of them.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import yaml

from liverlib.atomic import write_text
from liverlib.errors import ConfigError

PROFILES = ("smoke", "default", "paper")
STAGES = ("liver", "lesion")  # the two networks; the slice cache numbers them 1 and 2
STAGE_SECTION = "lesion_stage"  # keys of `model` / `train` that differ for the lesion network
STAGE_SECTIONS = ("model", "train")


def _load_profiles_file() -> dict[str, Any]:
    text = resources.files("liverlib").joinpath("profiles.yaml").read_text()
    return yaml.safe_load(text)


def _merge(base: dict, override: dict, where: str = "") -> dict:
    """Deep-merge ``override`` into a copy of ``base``; unknown keys are errors."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        name = f"{where}{key}"
        if key not in out:
            raise ConfigError(f"unknown config key '{name}'; known: {', '.join(sorted(out))}")
        if name == STAGE_SECTION:
            out[key] = _merge_stage(out, value)
        elif isinstance(out[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{name}' is a section; set one of its keys, e.g. '{name}.{next(iter(out[key]))}'")
            out[key] = _merge(out[key], value, f"{name}.")
        else:
            out[key] = _check_type(name, out[key], value)
    return out


def _merge_stage(config: dict, override: Any) -> dict:
    """Merge ``lesion_stage`` overrides: its sections take the keys (and types) of ``model`` / ``train``."""
    if not isinstance(override, dict):
        raise ConfigError(f"config key '{STAGE_SECTION}' is a section; set e.g. '{STAGE_SECTION}.model.dropout'")
    out = copy.deepcopy(config[STAGE_SECTION])
    for section, values in override.items():
        name = f"{STAGE_SECTION}.{section}"
        if section not in STAGE_SECTIONS:
            raise ConfigError(f"unknown config key '{name}'; known: {', '.join(STAGE_SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"config key '{name}' is a section; set one of the keys of '{section}'")
        for key, value in values.items():
            if key not in config[section]:
                raise ConfigError(f"unknown config key '{name}.{key}'; known: {', '.join(sorted(config[section]))}")
            out.setdefault(section, {})[key] = _check_type(f"{name}.{key}", config[section][key], value)
    return out


def stage_number(stage: str) -> int:
    """1 for ``"liver"``, 2 for ``"lesion"``: how the slice cache numbers the stages."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    return STAGES.index(stage) + 1


def stage_config(config: dict[str, Any], stage: str) -> dict[str, Any]:
    """The config that trains one stage: for ``"lesion"``, ``model`` and ``train``
    with the ``lesion_stage`` keys applied; for ``"liver"``, unchanged.

    Runs made before ``lesion_stage`` existed train both stages alike.
    """
    stage_number(stage)  # validates
    out = copy.deepcopy(config)
    if stage == "lesion":
        for section, values in (config.get(STAGE_SECTION) or {}).items():
            out[section].update(values or {})
    return out


#: List keys whose length may change (one or more values of the base's element
#: type), with the smallest value each element may take.
VARIABLE_LISTS = {"predict.min_lesion_ml": 0.0}


def _check_type(name: str, old: Any, new: Any) -> Any:
    """Keep a key's type: ints may become floats, nothing else changes type."""
    if old is None or new is None:
        return new
    if isinstance(old, bool) or isinstance(new, bool):
        if isinstance(old, bool) and isinstance(new, bool):
            return new
    elif isinstance(old, (int, float)) and isinstance(new, (int, float)):
        return float(new) if isinstance(old, float) else new
    elif isinstance(old, list) and isinstance(new, list):
        if name in VARIABLE_LISTS:
            if not new:
                raise ConfigError(f"config key '{name}' needs at least one value")
            values = [_check_type(name, old[0], n) for n in new]
            if min(values) < VARIABLE_LISTS[name]:
                raise ConfigError(f"config key '{name}' takes values >= {VARIABLE_LISTS[name]}, got {new!r}")
            return values
        if len(old) != len(new):
            raise ConfigError(f"config key '{name}' takes {len(old)} values, got {len(new)}")
        return [_check_type(name, o, n) for o, n in zip(old, new)]
    elif type(old) is type(new):
        return new
    raise ConfigError(f"config key '{name}' expects type {type(old).__name__}, got {new!r}")


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Turn ``["train.epochs=3", "data.dir=/x"]`` into a nested dict.

    Values are parsed as YAML, so ``3`` is an int, ``1e-3`` a float, ``[1, 2]``
    a list and ``true`` a bool.
    """
    dotted: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set takes KEY=VALUE, got '{item}'")
        value = yaml.safe_load(raw) if raw.strip() else ""
        if isinstance(value, str) and _is_float(raw):
            value = float(raw)
        dotted[key.strip()] = value
    return nest(dotted)


def nest(dotted: dict[str, Any]) -> dict[str, Any]:
    """``{"train.epochs": 3}`` -> ``{"train": {"epochs": 3}}``."""
    nested: dict[str, Any] = {}
    for key, value in dotted.items():
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config key '{key}' conflicts with another override")
        node[parts[-1]] = value
    return nested


def _is_float(text: str) -> bool:
    # YAML 1.1 reads "1e-3" as a string; users mean a float.
    try:
        float(text)
    except ValueError:
        return False
    return True


def resolve(profile: str = "default", overrides: Iterable[str] | dict | None = None) -> dict[str, Any]:
    """Return the resolved configuration of ``profile`` with ``overrides`` applied.

    Parameters
    ----------
    profile : {"smoke", "default", "paper"}
    overrides : list of "KEY=VALUE" strings, or a dict (nested, or with dotted keys), optional

    Raises
    ------
    ConfigError
        For an unknown profile, an unknown key or a value of the wrong type.
    """
    table = _load_profiles_file()
    if profile not in table["profiles"]:
        raise ConfigError(f"unknown profile '{profile}'; choose one of {', '.join(PROFILES)}")
    config = _merge(table["base"], table["profiles"][profile] or {})
    config = apply_overrides(config, overrides)
    config["profile"] = profile
    return config


def defaults(section: str) -> dict[str, Any]:
    """Return a copy of one section of the ``base`` profile, e.g. ``defaults("crf")``.

    Functions whose parameters mirror a profile section fill the ones they are
    not given from here, so that ``profiles.yaml`` is the only place the values
    are written.

    Raises
    ------
    ConfigError
        For a section the base profile does not have.
    """
    base = _load_profiles_file()["base"]
    if not isinstance(base.get(section), dict):
        sections = sorted(k for k, v in base.items() if isinstance(v, dict))
        raise ConfigError(f"unknown config section '{section}'; known: {', '.join(sections)}")
    return copy.deepcopy(base[section])


def apply_overrides(config: dict[str, Any], overrides: Iterable[str] | dict | None) -> dict[str, Any]:
    """Return a copy of ``config`` with ``overrides`` applied and validated."""
    if not overrides:
        return copy.deepcopy(config)
    nested = nest(overrides) if isinstance(overrides, dict) else parse_overrides(overrides)
    nested.pop("profile", None)
    profile = config.get("profile")
    out = _merge({k: v for k, v in config.items() if k != "profile"}, nested)
    if profile is not None:
        out["profile"] = profile
    return out


def write_config(config: dict[str, Any], path: str | Path) -> Path:
    """Write the resolved config as YAML, atomically."""
    return write_text(path, yaml.safe_dump(config, sort_keys=False))


def read_config(path: str | Path) -> dict[str, Any]:
    """Read a run's ``config.yaml``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("no config.yaml here; is this a liverlib run folder?", path.parent)
    return yaml.safe_load(path.read_text())
