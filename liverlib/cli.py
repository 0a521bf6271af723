"""The ``liverlib`` command line.

Every subcommand turns a :class:`~liverlib.errors.LiverlibError` into one line
on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from liverlib.config import PROFILES, defaults, resolve
from liverlib.errors import LiverlibError

# Each subcommand imports its module when it runs, so `liverlib --help` never loads Keras.
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _cmd_phantoms(args: argparse.Namespace) -> int:
    from liverlib.data.phantoms import write_cohort

    size = args.size or (512 if args.geometry == "lits" else defaults("data")["phantom_size"])
    paths = write_cohort(args.out, cases=args.cases, seed=args.seed, size=size, workers=args.workers,
                         geometry=None if args.geometry == "cohort" else args.geometry)
    print(f"wrote {len(paths)} phantom cases to {args.out} (seed {args.seed}, {args.geometry} geometry, {size} px)")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from liverlib.data.check import check_folder

    return check_folder(args.data, workers=args.workers)


def _cmd_run(args: argparse.Namespace) -> int:
    overrides = list(args.set or [])
    if args.data is not None:
        overrides.append(f"data.dir={args.data.resolve()}")
    from liverlib.inference.executors import executor_settings

    executor_settings(resolve(args.profile, overrides))  # validate every --set before anything starts
    from liverlib.runner import run

    return run(profile=args.profile, out=args.out, overrides=overrides)


def _cmd_predict(args: argparse.Namespace) -> int:
    from liverlib.inference.scan import predict_file

    predict_file(args.input, args.output, run_dir=args.run, fold=args.fold, use_crf=not args.no_crf,
                 precision=args.precision, series_uid=args.series, dicom_seg=args.dicom_seg)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from liverlib.evaluation.folders import evaluate_folder

    return evaluate_folder(args.pred_dir, args.ref_dir, out=args.out)


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.scale:
        from liverlib.bench.scale import run_scale_benchmark

        return run_scale_benchmark(out=args.out)
    from liverlib.bench import run_benchmarks

    return run_benchmarks(out=args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="liverlib",
        description="Mixed-UNet liver and lesion segmentation: data, training, CRF, evaluation.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cohort = defaults("data")  # the default profile's cohort: `liverlib phantoms` makes the same one
    p = sub.add_parser("phantoms", help="write a synthetic phantom cohort in LiTS layout")
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--cases", type=int, default=cohort["phantom_cases"],
                   help=f"number of cases (default {cohort['phantom_cases']})")
    p.add_argument("--seed", type=int, default=cohort["phantom_seed"], help=f"cohort seed (default {cohort['phantom_seed']})")
    p.add_argument("--size", type=int, default=None,
                   help=f"in-plane voxels (default {cohort['phantom_size']}; 512 with --geometry lits)")
    p.add_argument("--geometry", choices=("cohort", "lits"), default="cohort",
                   help="cohort: the default cohort's scans (crops, 40-200 planes); lits: LiTS's geometry "
                        "(512 x 512, 0.55-1 mm pixels, 74-987 planes 0.7-5 mm apart), for scale tests")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel processes")
    p.set_defaults(func=_cmd_phantoms)

    p = sub.add_parser("check", help="validate a LiTS or MSD Task03 folder")
    p.add_argument("data", type=Path, help="data folder")
    p.add_argument("--workers", type=int, default=1, help="parallel processes")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("run", help="run notebooks 01-08 headless into a run folder")
    p.add_argument("--profile", choices=PROFILES, default="default")
    p.add_argument("--data", type=Path, default=None, help="LiTS/MSD folder (default: phantoms)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/PROFILE)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("predict", help="segment one CT with a trained run")
    p.add_argument("input", type=Path, help="input CT: .nii or .nii.gz, or a folder of one DICOM series")
    p.add_argument("output", type=Path, help="output labels: .nii.gz, or .dcm for a DICOM Segmentation")
    p.add_argument("--series", default=None, metavar="UID",
                   help="the DICOM series to read when the input folder holds several")
    p.add_argument("--dicom-seg", action="store_true",
                   help="write a DICOM Segmentation of the input series (the default for an output ending in .dcm)")
    p.add_argument("--run", type=Path, default=None,
                   help="trained run folder (default: the model pair shipped in the package)")
    p.add_argument("--fold", type=int, default=None, help="use one fold's models (default: all)")
    p.add_argument("--no-crf", action="store_true", help="skip the 3D CRF")
    p.add_argument("--precision", choices=("float32", "bfloat16"), default=None,
                   help="network precision (default: the run's predict.precision); "
                        "bfloat16 is ~2x faster on CPUs with AVX512-BF16/AMX and on GPUs")  # fmt: skip
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("evaluate", help="score predictions against references (LiTS metrics)")
    p.add_argument("pred_dir", type=Path)
    p.add_argument("ref_dir", type=Path)
    p.add_argument("--out", type=Path, default=None, help="long-format CSV")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("bench", help="speed and memory benchmarks")
    p.add_argument("--out", type=Path, default=None, help="JSON file (default: stdout)")
    p.add_argument("--scale", action="store_true",
                   help="instead: LiTS-sized volumes up to 512 x 512 x 987, seconds and peak memory of cache build, "
                        "prediction and evaluation for 1 and 4 cases (about 5 min on 2 cores)")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``liverlib`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LiverlibError as exc:
        print(f"liverlib {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"liverlib {args.command}: interrupted; completed outputs are kept, rerun to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
