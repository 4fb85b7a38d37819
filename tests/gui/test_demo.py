"""``make demo`` opens the real sample head, with the panel docked on the default model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from napari_medseg.io import read_volume
from tests._paths import REPO_ROOT

pytestmark = pytest.mark.gui


def _demo_script():
    """``scripts/demo.py``, the script ``make demo`` runs, imported as a module."""
    spec = importlib.util.spec_from_file_location("medseg_demo", REPO_ROOT / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_opens_the_sample_head_with_the_default_model(make_napari_viewer):
    from napari_medseg.models import resolve_bundle
    from napari_medseg.resources import HEAD_SAMPLE, sample_volume_path
    demo = _demo_script()

    viewer = make_napari_viewer(show=True)
    panel = demo.set_up(viewer)
    (image,) = viewer.layers
    assert image.name == "Adult head T1"
    head = read_volume(sample_volume_path(HEAD_SAMPLE))
    np.testing.assert_array_equal(np.asarray(image.data), head.array)
    assert image.metadata["medseg"]["geometry"] == head.geometry
    assert panel.image_combo.currentText() == "Adult head T1"
    model = panel.session.model
    assert model is not None, panel.model_section.summary.text()
    assert Path(model.bundle_path).resolve() == Path(resolve_bundle("brain-tissue-unet")).resolve()
    assert list(model.config.class_names) == ["background", "CSF", "grey matter", "white matter"]
