"""The plugin's napari listing: npe2's own validation, the icon, names that say what each
contribution does."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources

import numpy as np
import pytest
from npe2 import PluginManifest

from tests._paths import REPO_ROOT

MANIFEST = REPO_ROOT / "napari_medseg" / "napari.yaml"


@pytest.fixture(scope="module")
def manifest() -> PluginManifest:
    return PluginManifest.from_file(MANIFEST)


@pytest.mark.parametrize("target", [str(MANIFEST), "napari-medseg"], ids=["file", "installed"])
def test_npe2_validate_accepts_the_manifest(target):
    """``npe2 validate --imports``: the schema, and every python_name imported."""
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "--imports", target], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid!" in result.stdout


def test_npe2_validate_rejects_a_broken_manifest(tmp_path):
    """The same check fails on a manifest whose icon is not a package resource."""
    broken = tmp_path / "napari.yaml"
    broken.write_text(MANIFEST.read_text().replace("icon: napari_medseg:icon.png", "icon: napari_medseg/icon.png"))
    result = subprocess.run([sys.executable, "-m", "npe2", "validate", str(broken)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "napari_medseg/icon.png is not a valid" in result.stdout


def test_icon_is_a_square_png_inside_the_package(manifest):
    import imageio.v3 as iio

    package, _, name = manifest.icon.partition(":")
    icon = resources.files(package) / name
    assert icon.is_file(), manifest.icon
    pixels = iio.imread(icon.read_bytes(), extension=".png")
    assert pixels.shape == (256, 256, 4)
    assert pixels[128, 128, 3] == 255 and pixels[0, 0, 3] == 0  # opaque middle, rounded transparent corner
    assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 4  # a drawing, not a flat square


def test_names_say_what_each_contribution_does(manifest):
    contributions = manifest.contributions
    samples = {s.key: s.display_name for s in contributions.sample_data}
    assert samples == {"adult_head_t1": "Adult head T1", "mni152_template_t1": "MNI152 average template T1 (152 brains)"}
    widgets = [w.display_name for w in contributions.widgets]
    assert widgets == ["Segmentation panel", "Cohort review"]
    for command in contributions.commands:
        assert command.short_title, command.id
        assert len(command.title.split()) >= 8, f"{command.id}: title {command.title!r} says too little"
    assert len({c.title for c in contributions.commands}) == len(contributions.commands)
    assert {w.display_name for w in contributions.writers} == {
        "Labels with the scan's geometry",
        "Image with the scan's geometry",
    }
