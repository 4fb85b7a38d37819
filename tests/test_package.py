"""The package imports lazily and its manifest is valid code."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest
from npe2 import PluginManifest

from tests._paths import REPO_ROOT


def test_import_loads_neither_torch_nor_qt():
    code = (
        "import sys, json, napari_medseg;"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari', 'SimpleITK'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_lazy_attributes_resolve():
    import napari_medseg

    assert callable(napari_medseg.read_volume)
    assert callable(napari_medseg.write_volume)
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        napari_medseg.nonexistent  # noqa: B018


def test_manifest_validates_and_matches_package():
    manifest = PluginManifest.from_file(REPO_ROOT / "napari.yaml")
    assert manifest.name == "napari-medseg"
    packaged = PluginManifest.from_file(REPO_ROOT / "napari_medseg" / "napari.yaml")
    assert packaged == manifest


def test_every_python_name_imports():
    manifest = PluginManifest.from_file(REPO_ROOT / "napari.yaml")
    assert manifest.contributions.commands
    for command in manifest.contributions.commands:
        module_name, _, attribute = command.python_name.partition(":")
        module = importlib.import_module(module_name)
        assert callable(getattr(module, attribute)), command.python_name


def test_contributions_reference_declared_commands():
    manifest = PluginManifest.from_file(REPO_ROOT / "napari.yaml")
    ids = {command.id for command in manifest.contributions.commands}
    contributions = manifest.contributions
    used = [r.command for r in contributions.readers or []]
    used += [w.command for w in contributions.writers or []]
    used += [s.command for s in contributions.sample_data or []]
    used += [w.command for w in contributions.widgets or []]
    assert used and set(used) <= ids


def test_npe2_discovers_installed_plugin():
    from npe2 import PluginManager

    manager = PluginManager()
    manager.discover()
    manifest = manager.get_manifest("napari-medseg")
    assert manifest.contributions.readers
    assert manifest.contributions.sample_data
