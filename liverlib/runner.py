"""``liverlib run``: execute the numbered notebooks headless with papermill.

The notebooks are the story and the record: each is executed into
``RUN/notebooks`` with parameters taken from the run's config. The runner

* writes ``RUN/config.yaml`` first, and refuses to resume a folder whose config
  differs (its models and tables would not match the new config); the
  ``executor`` section may change: it says where the run computes, not what;
* runs every notebook in a kernel that is this very Python (a kernelspec made
  for the run, found first on ``JUPYTER_PATH``), whatever kernels the user's
  Jupyter knows, with the working directory fixed to the notebooks' folder;
* marks each completed notebook in ``RUN/notebooks/status.json`` so a rerun
  resumes after the last complete one; the notebooks themselves skip finished
  folds and predictions;
* turns a failing cell into one line naming the notebook and the cell.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from liverlib import config as config_module
from liverlib.atomic import atomic_path, write_json
from liverlib.errors import LiverlibError
from liverlib.progress import ProgressTicker
from liverlib.runfolder import RunFolder

NOTEBOOKS = (
    "01_data",
    "02_preprocessing",
    "03_mixed_unet",
    "04_liver_training",
    "05_lesion_training",
    "06_crf",
    "07_evaluation",
    "08_real_ct",
)
KERNEL_NAME = "liverlib-run"


def notebooks_dir() -> Path:
    """The folder of the source notebooks: ``$LIVERLIB_NOTEBOOKS`` or the checkout's ``notebooks/``."""
    folder = Path(os.environ.get("LIVERLIB_NOTEBOOKS", Path(__file__).resolve().parents[1] / "notebooks"))
    if not (folder / f"{NOTEBOOKS[0]}.ipynb").is_file():
        raise LiverlibError("the numbered notebooks are not here; set LIVERLIB_NOTEBOOKS to the notebooks folder", folder)
    return folder


def _kernel_spec(run: RunFolder) -> None:
    """A kernelspec running this interpreter, put first on JUPYTER_PATH for this process and its kernels."""
    spec_dir = run.jupyter / "kernels" / KERNEL_NAME
    spec = {
        "argv": [sys.executable, "-m", "liverlib._kernel", "-f", "{connection_file}"],
        "display_name": f"liverlib ({sys.executable})",
        "language": "python",
        "env": {
            "LIVERLIB_HEADLESS": "1",
            "PYTHONHASHSEED": "0",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "LIVERLIB_KERNEL_LOG": str(run.kernel_log.resolve()),
        },
    }
    run.notebooks.mkdir(parents=True, exist_ok=True)
    write_json(spec_dir / "kernel.json", spec)
    paths = [str(run.jupyter.resolve())] + [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p]
    os.environ["JUPYTER_PATH"] = os.pathsep.join(paths)


def notebook_parameters(cfg: dict, run_dir: Path) -> dict:
    """Every parameter a notebook may declare, from the run's config."""
    real_ct_dir = Path(__file__).resolve().parents[1] / "tests" / "data"  # in a source checkout
    real_ct = real_ct_dir / "ct_abdomen_3mm.nii.gz"
    return {
        "run_dir": str(run_dir.resolve()),
        "profile": cfg["profile"],
        "data_dir": str(cfg["data"]["dir"]),
        "n_cases": int(cfg["data"]["phantom_cases"]),
        "seed": int(cfg["data"]["phantom_seed"]),
        "real_ct": str(real_ct) if real_ct.is_file() else "",
        "real_ct_dir": str(real_ct_dir),
        "folds": "all",
    }


def _status(run: RunFolder) -> dict:
    path = run.status
    return json.loads(path.read_text()) if path.is_file() else {}


def run(profile: str = "default", out: str | Path | None = None, overrides: list[str] | None = None,
        notebooks: tuple[str, ...] = NOTEBOOKS, progress_interval: float = 120.0) -> int:
    """Execute ``notebooks`` in order into the run folder; resume a previous run.

    While a notebook runs, a line with its finished folds or cases and the
    estimated time left (:mod:`liverlib.progress`) is printed when it starts
    and every ``progress_interval`` seconds.

    Returns
    -------
    int
        0 on success. A failing notebook raises LiverlibError naming it and the cell.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    cfg = config_module.resolve(profile, overrides or [])
    run_folder = RunFolder(Path(out or Path("runs") / profile).resolve())
    if run_folder.config.is_file():
        previous = config_module.read_config(run_folder.config)
        # the executor says where the run computes, not what: it may change on resume
        changed = sorted(_diff({**previous, "executor": None}, {**cfg, "executor": None}))
        if changed:
            raise LiverlibError(
                f"this run folder was made with another config ({', '.join(changed[:4])}); "
                "choose another --out, or delete the folder to start over",
                run_folder.root,
            )
    run_folder.root.mkdir(parents=True, exist_ok=True)
    config_module.write_config(cfg, run_folder.config)
    _kernel_spec(run_folder)
    source_dir = notebooks_dir()
    status = _status(run_folder)
    started = time.perf_counter()
    todo = [name for name in notebooks if not status.get(name, {}).get("complete")]
    ticker = ProgressTicker(run_folder.root, cfg, todo, interval=progress_interval)
    for name in notebooks:
        if name not in todo:
            print(f"[{name}] complete, skipped", flush=True)
            continue
        source = source_dir / f"{name}.ipynb"
        declared = set(papermill.inspect_notebook(str(source)))
        params = {k: v for k, v in notebook_parameters(cfg, run_folder.root).items() if k in declared}
        target = run_folder.notebooks / f"{name}.ipynb"
        ticker.start(name)  # "[name] ... about N min left", then every progress_interval seconds
        t0 = time.perf_counter()
        with atomic_path(target) as tmp, _stopping(ticker):
            try:
                papermill.execute_notebook(
                    str(source), str(tmp), parameters=params, kernel_name=KERNEL_NAME,
                    cwd=str(source_dir), progress_bar=False, log_output=False,
                    request_save_on_cell_execute=False,
                )
            except PapermillExecutionError as exc:
                failed = run_folder.notebooks / f"{name}.failed.ipynb"
                os.replace(tmp, failed)  # keep the executed notebook, traceback included, for inspection
                first_line = (str(exc.evalue).strip().splitlines() or [""])[0]
                raise LiverlibError(
                    f"{name}.ipynb failed in cell {exc.cell_index} (execution count {exc.exec_count}): "
                    f"{exc.ename}: {first_line} (executed notebook with the traceback: {failed})"
                ) from None
        seconds = time.perf_counter() - t0
        ticker.finish(name, seconds)
        status[name] = {"complete": True, "seconds": round(seconds, 1)}
        write_json(run_folder.status, status)
        print(f"[{name}] done in {seconds:.0f} s", flush=True)
    total = sum(v["seconds"] for v in status.values())
    print(f"run complete: {run_folder.root} ({time.perf_counter() - started:.0f} s now, {total:.0f} s in all notebooks)", flush=True)
    return 0


@contextmanager
def _stopping(ticker: ProgressTicker):
    """Stop the ticker's thread however the notebook ends."""
    try:
        yield
    finally:
        ticker.stop()


def _diff(a: dict, b: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key in set(a) | set(b):
        name = f"{prefix}{key}"
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            keys |= _diff(a[key], b[key], f"{name}.")
        elif a.get(key) != b.get(key):
            keys.add(name)
    return keys
