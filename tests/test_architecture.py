"""The package's shape holds: imports only go down the pipeline's layers, napari and Qt stay
on the napari side (the widgets and the contributions), files and functions stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests._paths import REPO_ROOT

PACKAGE = REPO_ROOT / "napari_medseg"

# Top-level units by layer, lowest first: a unit may import only from lower layers.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__init__", "types", "control", "config", "resources"),
    ("io", "quantify"),
    ("preprocess",),
    ("display", "postprocess"),
    ("contributions", "models"),
    ("inference",),
    ("uncertainty", "explain"),
    ("training",),
    ("export",),
    ("batch",),
    ("cli", "widgets", "_reader", "_writer", "_sample_data"),
)
# The napari side (DESIGN.md): the only modules that may import napari or Qt.
NAPARI_SIDE = ("widgets", "_reader", "_writer", "_sample_data")
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
QT_MODULES = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "superqt", "magicgui", "napari")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80


def _modules() -> list[tuple[Path, str, bool]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found.append((path, ".".join(parts[:-1] if is_package else parts), is_package))
    return found


def _imports(path: Path, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in ``path``, those inside functions included."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names if not node.module]
    return found


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_top_level_unit_has_a_layer():
    units = {_unit(module) for _, module, _ in _modules()}
    assert units - set(RANK) == set(), "give new top-level modules a layer in LAYERS"


def test_imports_only_go_down_the_layers():
    upward = []
    for path, module, is_package in _modules():
        here = _unit(module)
        for line, target in _imports(path, module, is_package):
            if not target.startswith("napari_medseg"):
                continue
            there = _unit(target) if target != "napari_medseg" else "__init__"
            if there != here and there in RANK and RANK[there] >= RANK[here]:
                upward.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {target}")
    assert upward == []


def test_only_the_napari_side_imports_napari_or_qt():
    offenders = []
    for path, module, is_package in _modules():
        if _unit(module) in NAPARI_SIDE:
            continue
        for line, target in _imports(path, module, is_package):
            if target.split(".")[0] in QT_MODULES:
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {target}")
    assert offenders == []


@pytest.mark.parametrize("limit", [MAX_FILE_LINES])
def test_no_file_is_too_long(limit):
    long = [f"{p.relative_to(REPO_ROOT)}: {n}" for p, _, _ in _modules() if (n := len(p.read_text().splitlines())) > limit]
    assert long == []


def test_no_function_is_too_long():
    long = []
    for path, _, _ in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                size = node.end_lineno - first + 1
                if size > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.name}: {size} lines")
    assert long == []
