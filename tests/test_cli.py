"""Command-line exit codes and messages."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from test_data import BAD_KINDS, _make_bad

from liverlib.cli import main


def test_check_good_folder(lits_dir, capsys):
    assert main(["check", str(lits_dir)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 3
    assert out[0].startswith("case    0  volume-0.nii.gz") and "labels {0,1,2}" in out[0]
    assert "16x12x6" not in out[0] and "6x12x16" in out[0]  # canonical (plane, row, column)
    assert out[-1] == "2 cases: 2 usable, 0 unusable"


def test_check_real_ct(real_lits_dir, capsys):
    assert main(["check", str(real_lits_dir)]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert "30x101x122" in line and "3.00x3.00x3.00" in line and "RAS" in line and "labels {0,1}" in line


@pytest.mark.parametrize("kind", sorted(BAD_KINDS))
def test_check_bad_input_exits_nonzero_with_one_line(tmp_path, capsys, kind):
    bad_file = _make_bad(kind, tmp_path)
    assert main(["check", str(tmp_path)]) != 0
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert len(errors) == 1 and str(bad_file) in errors[0] and BAD_KINDS[kind] in errors[0]
    assert "Traceback" not in captured.err + captured.out
    assert captured.out.strip().splitlines()[-1] == "2 cases: 1 usable, 1 unusable"


@pytest.mark.parametrize("setup,message", [("empty", "no CT cases found"), ("orphan", "volume without its segmentation")])
def test_check_unusable_folder(tmp_path, capsys, setup, message):
    if setup == "orphan":
        _make_bad("truncated", tmp_path)
        (tmp_path / "segmentation-1.nii.gz").unlink()
    assert main(["check", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and str(tmp_path) in err[0]


def test_console_script_has_no_traceback(tmp_path):
    exe = shutil.which("liverlib") or str(__import__("pathlib").Path(sys.executable).parent / "liverlib")
    _make_bad("labels", tmp_path)
    result = subprocess.run([exe, "check", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "labels outside {0, 1, 2}: 5" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run([exe, "run", "--set", "train.bogus=1"], capture_output=True, text=True)
    assert result.returncode == 2 and "unknown config key 'train.bogus'" in result.stderr
    assert "Traceback" not in result.stderr
    out = tmp_path / "never"
    result = subprocess.run([exe, "run", "--out", str(out), "--set", "executor.kind=slurm"], capture_output=True, text=True)
    assert result.returncode == 2 and "executor.kind must be one of local, dask, got 'slurm'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()  # refused before anything starts


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["predict"])
    assert info.value.code == 2
