"""The two-command setup: pyproject, environment.yml, Makefile and CI agree."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip = set(), set()
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            pip |= {_name(r) for r in entry["pip"] if not r.startswith("-e")}
        else:
            conda.add(_name(entry))
    assert "python" in conda and "conda-forge" in env["channels"]
    assert any(str(r).startswith("-e .") for e in env["dependencies"] if isinstance(e, dict) for r in e["pip"])
    conda -= {"distributed"}  # conda's half of pip's dask[distributed]
    missing = wanted - conda - pip
    assert not missing, f"in pyproject.toml but not environment.yml: {sorted(missing)}"
    extra = (conda | pip) - wanted - {"python", "pip", "jupyterlab"}
    assert not extra, f"in environment.yml but not pyproject.toml: {sorted(extra)}"


def test_console_script_and_ci():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["liverlib"] == "liverlib.cli:main"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "set -e" in ci
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^paper: \$\(STAMP\)", makefile, re.M) and re.search(r"^test: \$\(STAMP\)", makefile, re.M)


def test_readme_starts_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    head = readme[: readme.index("\n## ", readme.index("make test"))]
    assert "make paper" in head and "make test" in head
