"""Export → DICOM SEG from the panel, and the SEG re-opened as a Labels layer on the scan's grid."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.dicom_series import oblique_direction, write_series
from tests.tiny_models import tiny_bundle

pytestmark = pytest.mark.gui
JOB_TIMEOUT_MS = 180_000
CORNERS = ([0, 0, 0], [9, 23, 21], [4, 10, 7])


def _dicom_scan(folder):
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in (10, 24, 22)], indexing="ij")
    write_series(folder, 400 * (z**2 + y**2 + x**2 < 0.6), (1.5, 1.0, 1.1), (10.0, -20.0, 5.0), oblique_direction())
    return folder


def _world(layer, index):
    return np.asarray(layer.data_to_world(index))


def test_export_writes_a_seg_that_reopens_on_the_same_grid(make_napari_viewer, qtbot, home, tmp_path):
    bundle = tiny_bundle(home / "models", name="tiny-seg-model")
    series = _dicom_scan(tmp_path / "head")
    viewer = make_napari_viewer(show=True)
    (image,) = viewer.open(str(series), plugin="napari-medseg")
    _, panel = viewer.window.add_plugin_dock_widget("napari-medseg", "Segmentation panel")
    panel.model_section.select_path(bundle)
    panel.session.device = "cpu"
    assert panel.segment_section.run() is not None
    qtbot.waitUntil(lambda: not panel.jobs.busy, timeout=JOB_TIMEOUT_MS)
    segmentation = viewer.layers["head segmentation"]

    panel.export_section.folder_edit.setText(str(tmp_path / "export"))
    written = panel.export_section.export()
    seg_file = tmp_path / "export" / "head_segmentation_seg.dcm"
    assert seg_file in written and seg_file.is_file()

    expected = np.array(segmentation.data)
    world = [_world(image, index) for index in CORNERS]
    affine = image.affine.affine_matrix
    viewer.layers.clear()  # a fresh session: the scan folder with the SEG beside its series
    shutil.copy(seg_file, series / seg_file.name)
    image, labels = viewer.open(str(series), plugin="napari-medseg")
    assert labels.__class__.__name__ == "Labels" and labels.metadata["medseg"]["image_layer"] == image.name
    assert labels.metadata["medseg"]["class_names"] == ["background", "CSF", "grey matter", "white matter"]
    np.testing.assert_array_equal(labels.data, expected)
    for index, position in zip(CORNERS, world):
        np.testing.assert_allclose(_world(labels, index), position, atol=1e-9)
    (alone,) = viewer.open(str(series / seg_file.name), plugin="napari-medseg")  # the SEG file by itself
    np.testing.assert_array_equal(alone.data, expected)
    np.testing.assert_allclose(alone.affine.affine_matrix, affine, atol=1e-12)
    np.testing.assert_allclose(alone.scale, image.scale, atol=1e-12)
