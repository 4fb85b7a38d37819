"""Paths the tests share."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDSEG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
ARTIFACTS = Path(os.environ.get("MEDSEG_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts"))


def bench_module(name: str) -> ModuleType:
    """The script ``bench/<name>.py`` imported as a module (``bench/`` is not a package)."""
    return _script(REPO_ROOT / "bench" / f"{name}.py")


def scripts_module(name: str) -> ModuleType:
    """The script ``scripts/<name>.py`` imported as a module."""
    return _script(REPO_ROOT / "scripts" / f"{name}.py")


def _script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
