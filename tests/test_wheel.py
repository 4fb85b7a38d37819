"""A wheel built from the checkout carries the manifest, icon and resources, is discovered
when installed outside the checkout, and opens its panel and sample in a napari viewer."""

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
    assert "napari_medseg/resources/sample/adult_head_t1.nii.gz" in names
    assert "napari_medseg/icon.png" in names
    assert "napari_medseg/resources/sample/NOTICE.md" in names
    assert "napari_medseg/resources/models/brain-tissue-unet/weights.pt" in names
    assert "napari_medseg/resources/models/brain-tissue-unet/MODEL_CARD.md" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "napari-medseg = napari_medseg:napari.yaml" in text
    assert "medseg = napari_medseg.cli:main" in text


@pytest.mark.gui
def test_installed_wheel_is_discovered_outside_checkout(wheel, tmp_path):
    """Installed from the wheel (not the checkout), npe2 finds the plugin, and a napari
    viewer opens its sample and its panel with the default model (needs a display: Xvfb)."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    probe = textwrap.dedent(
        """
        import json, sys
        from pathlib import Path
        import napari
        from npe2 import PluginManager
        import napari_medseg
        from importlib import resources
        from napari_medseg.resources import HEAD_SAMPLE, resources_dir, sample_volume_path
        from napari_medseg.models import load_model, resolve_bundle
        default = resolve_bundle("brain-tissue-unet")
        model = load_model("brain-tissue-unet")
        manager = PluginManager()
        manager.discover()
        manifest = manager.get_manifest("napari-medseg")
        contributions = manifest.contributions
        package, _, icon = manifest.icon.partition(":")
        viewer = napari.Viewer(show=True)
        (head,) = viewer.open_sample("napari-medseg", HEAD_SAMPLE)
        _, panel = viewer.window.add_plugin_dock_widget("napari-medseg", "Segmentation panel")
        opened = {
            "sample_layer": head.name,
            "sample_shape": list(head.data.shape),
            "sample_scale": [float(s) for s in head.scale],
            "panel_module": sys.modules[type(panel).__module__].__file__,
            "panel_model": str(Path(panel.session.model.bundle_path).resolve()) if panel.session.model else None,
        }
        viewer.close()
        print(json.dumps({
            **opened,
            "icon": str(resources.files(package) / icon),
            "package": napari_medseg.__file__,
            "manifest": str(manifest.package_metadata.name),
            "commands": len(contributions.commands),
            "readers": len(contributions.readers or []),
            "writers": len(contributions.writers or []),
            "samples": len(contributions.sample_data or []),
            "widgets": len(contributions.widgets or []),
            "resources": str(resources_dir()),
            "sample": str(sample_volume_path(HEAD_SAMPLE)),
            "default_model": str(Path(default).resolve()),
            "default_classes": list(model.config.class_names),
        }))
        """
    )
    env = dict(os.environ, PYTHONPATH=str(target))
    # Run from an unrelated folder so the checkout is not importable from the cwd.
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(found["package"]).is_relative_to(target)
    assert Path(found["resources"]).is_relative_to(target)
    assert Path(found["sample"]).is_file()
    assert Path(found["default_model"]).is_relative_to(target)
    assert found["default_classes"] == ["background", "CSF", "grey matter", "white matter"]
    assert found["manifest"] == "napari-medseg"
    assert found["readers"] >= 1 and found["writers"] == 2 and found["samples"] == 2 and found["widgets"] >= 1
    assert Path(found["icon"]).is_relative_to(target) and Path(found["icon"]).stat().st_size > 1000
    # the installed plugin in a real viewer: File > Open Sample and Plugins > MedSeg
    assert found["sample_layer"] == "Adult head T1"
    assert found["sample_shape"] == [172, 232, 172] and found["sample_scale"] == [1.0, 1.0, 1.0]
    assert Path(found["panel_module"]).is_relative_to(target)
    assert found["panel_model"] == found["default_model"]
