"""The run folder and the cache folder: every path of a run, and of the shared cache, in one place.

::

    RUN/
      config.yaml        resolved profile plus overrides
      splits.json        patient-level folds
      cohort.csv         the cohort table of notebook 01
      notebooks/         executed notebooks, status.json, kernel.log, the run's kernelspec
      models/fold-K/     liver.keras, lesion.keras, history.csv, postprocessing.json
      predictions/       before-crf/ and after-crf/segmentation-N.nii.gz, timing.csv, real-ct/
      tables/            metrics.csv and the Dice tables
      figures/           the paper's figures, regenerated

Shared, rebuildable artefacts (the phantom cohorts, the slice cache) live
outside any run, in the :class:`CacheFolder`, keyed by their inputs, so a
second run on the same data reuses them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liverlib import config as config_module
from liverlib.config import STAGES

PREDICTION_FOLDERS = {0: "before-crf", 1: "after-crf"}  # by the ``crf`` flag of metrics.csv
_FOLD_DIR = re.compile(r"^fold-(\d+)$")


@dataclass(frozen=True)
class RunFolder:
    """Every path of one run folder."""

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
    def cohort(self) -> Path:
        return self.root / "cohort.csv"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    @property
    def status(self) -> Path:
        """Completed notebooks and their seconds (``liverlib run``)."""
        return self.notebooks / "status.json"

    @property
    def kernel_log(self) -> Path:
        return self.notebooks / "kernel.log"

    @property
    def jupyter(self) -> Path:
        """The run's own Jupyter data folder, holding its kernelspec."""
        return self.root / ".jupyter"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def model_dir(self, fold: int) -> Path:
        return self.models / f"fold-{int(fold)}"

    def model_file(self, fold: int, stage: str) -> Path:
        """``models/fold-K/liver.keras`` or ``lesion.keras``."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        return self.model_dir(fold) / f"{stage}.keras"

    def history(self, fold: int) -> Path:
        return self.model_dir(fold) / "history.csv"

    def postprocessing(self, fold: int) -> Path:
        """A fold's chosen lesion postprocessing (:mod:`liverlib.inference.postprocess`)."""
        return self.model_dir(fold) / "postprocessing.json"

    def trained_folds(self) -> list[int]:
        """The fold numbers that have a ``models/fold-K`` folder, sorted."""
        if not self.models.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.models.iterdir() if p.is_dir() and (m := _FOLD_DIR.match(p.name)))

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    def prediction(self, case_id: int, crf: int) -> Path:
        """One case's labels, before (``crf=0``) or after (``crf=1``) the CRF."""
        return self.predictions / PREDICTION_FOLDERS[int(crf)] / f"segmentation-{int(case_id)}.nii.gz"

    def real_ct_prediction(self, name: str) -> Path:
        """The labels the run's fold ensemble gives a real scan (:mod:`liverlib.evaluation.real_ct`)."""
        return self.predictions / "real-ct" / f"{name}.nii.gz"

    @property
    def timing(self) -> Path:
        """Seconds per predicted case."""
        return self.predictions / "timing.csv"

    @property
    def tables(self) -> Path:
        return self.root / "tables"

    @property
    def metrics(self) -> Path:
        """The long-format scores of every test scan (:func:`liverlib.evaluation.run.score_run`)."""
        return self.tables / "metrics.csv"

    @property
    def figures(self) -> Path:
        return self.root / "figures"


@dataclass(frozen=True)
class CacheFolder:
    """Every path of the shared cache of rebuildable artefacts."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def slices(self) -> Path:
        """The slice caches (:mod:`liverlib.data.cache`), one sub-folder per key."""
        return self.root / "slices"

    def phantom_cohort(self, cases: int, seed: int, size: int, version: int) -> Path:
        """The folder of one phantom cohort, made by generator ``version``."""
        return self.root / "phantoms" / f"v{int(version)}-seed{int(seed)}-n{int(cases)}-s{int(size)}"


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


def packaged_model_dir() -> Path:
    """The model pair shipped inside the package (``liverlib predict`` without ``--run``): a run folder
    with ``config.yaml``, ``models/fold-0`` and ``manifest.json``, written by ``make model``."""
    return Path(__file__).resolve().parent / "pretrained"


PACKAGED_MANIFEST = "manifest.json"  # in a packaged model folder: its data, profile, commit and real-CT Dice


def read_manifest(model_dir: str | Path | None = None) -> dict:
    """The manifest of a packaged model folder (default: the one in the package)."""
    import json

    return json.loads((Path(model_dir or packaged_model_dir()) / PACKAGED_MANIFEST).read_text())


def cache_folder() -> CacheFolder:
    """The cache folder at :func:`cache_root`."""
    return CacheFolder(cache_root())


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
