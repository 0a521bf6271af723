"""The package layout: no import cycle between liverlib modules, light imports, modules of a readable size."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "liverlib"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(name: str) -> str | None:
    """The liverlib module a dotted name refers to (a module, or the module holding the attribute)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> set[str]:
    """Every liverlib module that ``module`` imports, at module level or inside functions.

    The parent packages of an imported module count too (Python runs their
    ``__init__`` first), except the importer's own ancestors, which are always
    initialized before it. Imports under ``if TYPE_CHECKING:`` never run and do not count.
    """
    tree = ast.parse(MODULES[module].read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
                   for stmt in block.body for n in ast.walk(stmt)}
    is_package = MODULES[module].name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            target = _resolve(name) if name.startswith("liverlib") else None
            while target:
                if target != module and not module.startswith(target + "."):
                    targets.add(target)
                target = target.rpartition(".")[0]
    return targets


def test_no_import_cycle_between_liverlib_modules():
    graph = {module: _imports(module) for module in MODULES}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_the_cycle_check_sees_lazy_imports():
    # A function-level import counts: hiding a cycle inside a function does not hide it from the check.
    assert "liverlib.runner" in _imports("liverlib.cli")
    assert "liverlib.data.phantoms" in _imports("liverlib.data.sources")


LIGHT = ("liverlib", "liverlib.cli", "liverlib.config", "liverlib.runfolder", "liverlib.data", "liverlib.data.sources",
         "liverlib.transforms", "liverlib.inference", "liverlib.evaluation", "liverlib.reporting.tables")


def test_light_imports_and_help_do_not_load_keras():
    code = (f"import sys; import {', '.join(LIGHT)}; from liverlib.cli import build_parser; "
            "build_parser().format_help(); print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_public_names_of_the_design():
    from liverlib import data, evaluation, transforms

    for name in ("dice", "voe", "rvd", "assd", "msd"):
        assert callable(getattr(evaluation, name))
    assert callable(transforms.equalize_histogram) and callable(data.load_case) and callable(data.discover)
    out = subprocess.run([sys.executable, "-c", "from liverlib.networks import MixedPooling2D, mixed_unet"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]


def _long_functions(path: Path, limit: int) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body[1:] if ast.get_docstring(node) else node.body  # the docstring is not code
            lines = body[-1].end_lineno - body[0].lineno + 1 if body else 0
            if lines > limit:
                out.append(f"{node.name} ({lines} lines)")
    return out


def test_modules_and_functions_stay_readable():
    # A module over 500 lines, or a function with over 80 lines of code, must say why in its first lines.
    for module, path in MODULES.items():
        text = path.read_text()
        head = "\n".join(text.splitlines()[:15]).lower()
        if "too long:" in head:
            continue
        assert len(text.splitlines()) <= 500, f"{module}: {len(text.splitlines())} lines"
        assert not _long_functions(path, 80), f"{module}: {_long_functions(path, 80)}"
