"""Where a run's data comes from: a LiTS/MSD folder or the phantom cohort, and its slice cache."""

from __future__ import annotations

import json

from liverlib.atomic import write_json
from liverlib.data.cache import SliceCache, build_cache
from liverlib.data.nifti import CaseFiles, discover
from liverlib.data.phantoms import GENERATOR_VERSION, write_cohort
from liverlib.runfolder import cache_folder


def dataset_cases(cfg: dict, workers: int | None = None) -> list[CaseFiles]:
    """The run's cases: the LiTS/MSD folder of ``data.dir``, or the phantom cohort.

    The phantom cohort is generated once in the cache folder and reused.
    """
    data = cfg["data"]
    if data["dir"]:
        return discover(data["dir"])
    version = data.get("phantom_version", 1)  # runs made before the key used generator v1
    if version != GENERATOR_VERSION:
        raise ValueError(f"this run's phantoms come from generator v{version}, and this liverlib "
                         f"makes v{GENERATOR_VERSION}: start a new run folder, or use the liverlib that made the run")
    spec = {"cases": data["phantom_cases"], "seed": data["phantom_seed"], "size": data["phantom_size"]}
    folder = cache_folder().phantom_cohort(**spec, version=GENERATOR_VERSION)
    marker = folder / "cohort.json"
    # write_cohort verifies every case by loading it; do that once, not on every call.
    if not marker.is_file() or json.loads(marker.read_text()) != spec:
        write_cohort(folder, workers=workers or cfg["preprocess"]["workers"], **spec)
        write_json(marker, spec)
    return discover(folder)


def open_cache(cfg: dict, progress: bool = True) -> SliceCache:
    """Build the run's slice cache, or reuse it if it is complete and current."""
    return build_cache(dataset_cases(cfg), cache_folder().slices, cfg["preprocess"],
                       workers=cfg["preprocess"]["workers"], progress=progress)


def data_source(cfg: dict) -> str:
    """A one-line description of where the run's data comes from."""
    data = cfg["data"]
    if data["dir"]:
        return f"CT folder {data['dir']}"
    return f"synthetic phantom cohort ({data['phantom_cases']} cases, seed {data['phantom_seed']}, {data['phantom_size']} px)"
