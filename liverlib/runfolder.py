"""The run folder: its layout, its config and where its data comes from.

::

    RUN/
      config.yaml        resolved profile plus overrides
      splits.json        patient-level folds
      notebooks/         executed notebooks
      models/fold-K/     liver.keras, lesion.keras, history.csv
      predictions/       per-case label volumes, before and after CRF
      tables/            metrics.csv and the Dice tables
      figures/           the paper's figures, regenerated

Shared, reusable artefacts (the phantom cohort, the slice cache) live outside
the run, under the cache root (:func:`cache_root`), keyed by
their inputs, so a second run on the same data reuses them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liverlib import config as config_module
from liverlib.atomic import write_json
from liverlib.data import CaseFiles, discover


@dataclass(frozen=True)
class RunFolder:
    """Paths of one run folder."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def splits(self) -> Path:
        return self.root / "splits.json"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def tables(self) -> Path:
        return self.root / "tables"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    def model_dir(self, fold: int) -> Path:
        return self.root / "models" / f"fold-{fold}"


def cache_root() -> Path:
    """Where shared, rebuildable artefacts live (phantom cohorts, slice caches).

    ``$LIVERLIB_CACHE`` if set, else ``$XDG_CACHE_HOME/liverlib`` or
    ``~/.cache/liverlib``: never relative to the working directory, so a
    notebook kernel and the command line find the same cache.
    """
    if os.environ.get("LIVERLIB_CACHE"):
        return Path(os.environ["LIVERLIB_CACHE"]).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return (Path(base) / "liverlib").resolve()


def open_cache(cfg: dict, progress: bool = True):
    """Build the run's slice cache, or reuse it if it is complete and current."""
    from liverlib.cache import build_cache

    return build_cache(dataset_cases(cfg), cache_root() / "slices", cfg["preprocess"],
                       workers=cfg["preprocess"]["workers"], progress=progress)


def init_run(run_dir: str | Path, profile: str = "default", overrides: dict[str, Any] | list[str] | None = None) -> dict:
    """Create or reopen a run folder and write its resolved ``config.yaml``.

    A run folder that already has a config of the same profile keeps it (with
    every ``--set`` it was created with) and gets ``overrides`` on top; a new
    folder, or another profile, starts from the profile. ``overrides`` are
    dotted keys (``{"data.dir": "/lits"}``) or ``KEY=VALUE`` strings.
    """
    run = RunFolder(Path(run_dir))
    if run.config.is_file() and config_module.read_config(run.config).get("profile") == profile:
        cfg = config_module.apply_overrides(config_module.read_config(run.config), overrides)
    else:
        cfg = config_module.resolve(profile, overrides)
    run.root.mkdir(parents=True, exist_ok=True)
    if not run.config.is_file() or config_module.read_config(run.config) != cfg:
        config_module.write_config(cfg, run.config)
    return cfg


def load_run(run_dir: str | Path) -> dict:
    """The resolved config of an existing run."""
    return config_module.read_config(RunFolder(Path(run_dir)).config)


def dataset_cases(cfg: dict, workers: int | None = None) -> list[CaseFiles]:
    """The run's cases: the LiTS/MSD folder of ``data.dir``, or the phantom cohort.

    The phantom cohort is generated once under the cache root and reused.
    """
    data = cfg["data"]
    if data["dir"]:
        return discover(data["dir"])
    from liverlib.phantoms import write_cohort

    spec = {"cases": data["phantom_cases"], "seed": data["phantom_seed"], "size": data["phantom_size"]}
    folder = cache_root() / "phantoms" / f"seed{spec['seed']}-n{spec['cases']}-s{spec['size']}"
    marker = folder / "cohort.json"
    # write_cohort verifies every case by loading it; do that once, not on every call.
    if not marker.is_file() or json.loads(marker.read_text()) != spec:
        write_cohort(folder, workers=workers or cfg["preprocess"]["workers"], **spec)
        write_json(marker, spec)
    return discover(folder)


def data_source(cfg: dict) -> str:
    """A one-line description of where the run's data comes from."""
    data = cfg["data"]
    if data["dir"]:
        return f"CT folder {data['dir']}"
    return f"synthetic phantom cohort ({data['phantom_cases']} cases, seed {data['phantom_seed']}, {data['phantom_size']} px)"
