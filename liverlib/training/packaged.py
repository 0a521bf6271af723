"""The model pair shipped in the package: both stages trained on the whole cohort, weights only, with a manifest.

``make model`` (``python -m liverlib.training.packaged``) writes it to
:func:`liverlib.runfolder.packaged_model_dir`, a run folder of one "fold" that
trains on every scan of the profile's cohort (no held-out scan, no validation),
so that ``liverlib predict IN OUT`` works without a run of one's own. The
manifest records the data, profile and commit it came from and its liver Dice
on the real CT in ``tests/data``, which it never saw.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from liverlib import config
from liverlib.atomic import atomic_path, write_text
from liverlib.config import STAGES
from liverlib.data.sources import data_source, dataset_cases, open_cache
from liverlib.runfolder import PACKAGED_MANIFEST, RunFolder, packaged_model_dir
from liverlib.training.folds import CompiledModels, train_fold

__all__ = ["train_packaged_model"]

REAL_CT = Path(__file__).resolve().parents[2] / "tests" / "data"  # the checkout's real scans (not in a wheel)
# The shipped pair's recipe when no --set is given: the liver network on four times the default steps,
# the lesion network as in the profile (docs/experiments.md, session 15).
RECIPE = ("train.steps_per_epoch=120", "lesion_stage.train.steps_per_epoch=30")


def _weights_only(path: Path) -> None:
    """Rewrite a trained ``.keras`` file without its optimizer state (a third of the size)."""
    from liverlib.networks import load_model

    model = load_model(path, compile=False)
    with atomic_path(path) as tmp:
        model.save(tmp)


def train_packaged_model(out: str | Path | None = None, profile: str = "default", overrides=None,
                         real_ct: str | Path | None = REAL_CT, verbose: int = 2) -> dict:
    """Train both stages on every scan of a profile's cohort and write the packaged model folder.

    Parameters
    ----------
    out : str or Path, optional
        The folder to (re)write; default :func:`~liverlib.runfolder.packaged_model_dir`.
    profile : str
    overrides : dict or list of str, optional
        ``--set``-style changes to the profile, recorded in ``config.yaml``.
    real_ct : str or Path, optional
        Real scans with liver masks to score the model on
        (:func:`liverlib.evaluation.real_ct.score_real_ct`); None skips it.
    verbose : int

    Returns
    -------
    dict
        The manifest.
    """
    from liverlib.evaluation.real_ct import score_real_ct
    from liverlib.publish import _commit, _machine

    started = time.perf_counter()
    out = Path(out or packaged_model_dir())
    commit = _commit()
    if out.exists():
        shutil.rmtree(out)  # a model of another cohort or profile must not survive in part
    run = RunFolder(out)
    cfg = config.resolve(profile, overrides)
    out.mkdir(parents=True)
    config.write_config(cfg, run.config)
    cases = [c.case_id for c in dataset_cases(cfg)]
    cache = open_cache(cfg, progress=bool(verbose))
    train_fold(out, {"fold": 0, "train": cases, "val": [], "test": []}, cfg, cache, verbose=verbose,
               models=CompiledModels())
    for stage in STAGES:
        _weights_only(run.model_file(0, stage))
    manifest = {
        "what": "liverlib's packaged Mixed-UNet pair: stage 1 liver, stage 2 lesion",
        "profile": profile,
        "overrides": list(overrides or []),
        "data": data_source(cfg),
        "training_cases": cases,
        "held_out": "none: every scan of the cohort trains both networks",
        "commit": commit,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": _machine(),
        "training_seconds": round(time.perf_counter() - started, 1),
        "weights_mb": round(sum(run.model_file(0, s).stat().st_size for s in STAGES) / 1e6, 2),
        "min_lesion_ml": 0.0,
        "real_ct": [],
    }
    if real_ct is not None and Path(real_ct).is_dir():
        table = score_real_ct(out, real_ct, progress=bool(verbose))
        shutil.rmtree(run.predictions, ignore_errors=True)  # the scored labels are not part of the package
        manifest["real_ct"] = table[["scan", "spacing_mm", "liver_dice", "liver_ml", "reference_liver_ml",
                                     "false_lesion_ml"]].to_dict("records")
    write_text(out / PACKAGED_MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m liverlib.training.packaged", description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=None, help="folder to write (default: in the package)")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--set", dest="overrides", action="append", default=None, metavar="KEY=VALUE",
                        help=f"profile changes (default: the shipped recipe, {' '.join(RECIPE)})")
    args = parser.parse_args(argv)
    manifest = train_packaged_model(args.out, args.profile, list(RECIPE) if args.overrides is None else args.overrides)
    for row in manifest["real_ct"]:
        print(f"{row['scan']}: liver Dice {row['liver_dice']}, false lesion {row['false_lesion_ml']} mL")
    print(f"wrote {args.out or packaged_model_dir()} ({manifest['weights_mb']} MB of weights, "
          f"{manifest['training_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
