"""A wheel built from the checkout carries the manifest and resources and is discovered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests._paths import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(REPO_ROOT)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("napari_medseg-*.whl")
    return built


def test_wheel_contains_manifest_and_resources(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "napari_medseg/napari.yaml" in names
    assert "napari_medseg/resources/sample/mni152_t1.nii.gz" in names
    assert "napari_medseg/resources/sample/NOTICE.md" in names
    assert "napari_medseg/resources/models/brain-tissue-unet/weights.pt" in names
    assert "napari_medseg/resources/models/brain-tissue-unet/MODEL_CARD.md" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "napari-medseg = napari_medseg:napari.yaml" in text
    assert "medseg = napari_medseg.cli:main" in text


def test_installed_wheel_is_discovered_outside_checkout(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    probe = textwrap.dedent(
        """
        import json, sys
        from npe2 import PluginManager
        import napari_medseg
        from napari_medseg.resources import resources_dir, sample_volume_path
        from napari_medseg.models import load_model, resolve_bundle
        default = resolve_bundle("brain-tissue-unet")
        model = load_model("brain-tissue-unet")
        manager = PluginManager()
        manager.discover()
        manifest = manager.get_manifest("napari-medseg")
        contributions = manifest.contributions
        print(json.dumps({
            "package": napari_medseg.__file__,
            "manifest": str(manifest.package_metadata.name),
            "commands": len(contributions.commands),
            "readers": len(contributions.readers or []),
            "writers": len(contributions.writers or []),
            "samples": len(contributions.sample_data or []),
            "widgets": len(contributions.widgets or []),
            "resources": str(resources_dir()),
            "sample": str(sample_volume_path()),
            "default_model": str(default),
            "default_classes": list(model.config.class_names),
        }))
        """
    )
    env = dict(os.environ, PYTHONPATH=str(target))
    # Run from an unrelated folder so the checkout is not importable from the cwd.
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(found["package"]).is_relative_to(target)
    assert Path(found["resources"]).is_relative_to(target)
    assert Path(found["sample"]).is_file()
    assert Path(found["default_model"]).is_relative_to(target)
    assert found["default_classes"] == ["background", "CSF", "grey matter", "white matter"]
    assert found["manifest"] == "napari-medseg"
    assert found["readers"] >= 1 and found["writers"] == 2 and found["samples"] == 1 and found["widgets"] >= 1
