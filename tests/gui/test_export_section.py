"""The panel's Export writes its files as one set (the folder locked, staged, moved in) and
replaces earlier files only when the user says so; errors are notifications."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.io.folder_lock import FolderLock
from napari_medseg.io import read_volume
from napari_medseg.export.result_set import LOCK_NAME
from napari_medseg.widgets.sections import export as export_module
from tests.tiny_models import tiny_bundle

pytestmark = pytest.mark.gui
JOB_TIMEOUT_MS = 180_000
SCALE = (1.5, 0.8, 0.9)


@pytest.fixture
def notes(monkeypatch):
    """The notifications the section shows, as (kind, message)."""
    import napari.utils.notifications as notifications

    shown: list[tuple[str, str]] = []
    for kind in ("info", "warning", "error"):
        monkeypatch.setattr(notifications, f"show_{kind}", lambda message, kind=kind: shown.append((kind, message)))
    return shown


@pytest.fixture
def questions(monkeypatch):
    """Answers the Replace / Cancel question from ``answers`` (Replace = True); records the files asked about."""
    asked: list[list[str]] = []
    answers: list[bool] = []

    def ask(parent, existing):
        asked.append([path.name for path in existing])
        return answers.pop(0)

    monkeypatch.setattr(export_module, "ask_replace", ask)
    return asked, answers


def _panel_with_results(make_napari_viewer, value: int = 2):
    """A viewer with an image 'scan' and one labels layer of its results (no model)."""
    viewer = make_napari_viewer(show=True)
    image = np.random.default_rng(0).random((10, 16, 14)).astype(np.float32)
    viewer.add_image(image, name="scan", scale=SCALE, translate=(1.0, 2.0, 3.0))
    labels = np.zeros(image.shape, np.uint8)
    labels[3:7, 4:10, 5:9] = value
    viewer.add_labels(labels, name="scan corrections", scale=SCALE, translate=(1.0, 2.0, 3.0),
                      metadata={"medseg": {"image_layer": "scan", "corrections": True}})  # fmt: skip
    _, panel = viewer.window.add_plugin_dock_widget("napari-medseg", "Segmentation panel")
    panel.image_combo.setCurrentText("scan")
    return viewer, panel


def test_export_asks_before_replacing_and_cancel_keeps_the_files(make_napari_viewer, tmp_path, notes, questions):
    asked, answers = questions
    viewer, panel = _panel_with_results(make_napari_viewer)
    section = panel.export_section
    folder = tmp_path / "export"
    section.folder_edit.setText(str(folder))
    (written,) = section.export()
    assert written == folder / "scan_corrections.nii.gz" and not asked
    assert sorted(p.name for p in folder.iterdir()) == ["scan_corrections.nii.gz"]  # no staging, no lock
    first = written.read_bytes()
    assert read_volume(written).spacing == SCALE

    viewer.layers["scan corrections"].data = viewer.layers["scan corrections"].data * 2
    answers.append(False)
    assert section.export() == []
    assert asked == [["scan_corrections.nii.gz"]] and written.read_bytes() == first
    assert notes[-1][0] == "info" and str(written) in notes[-1][1] and "kept" in notes[-1][1]

    answers.append(True)
    assert section.export() == [written]
    np.testing.assert_array_equal(read_volume(written).array, viewer.layers["scan corrections"].data)
    assert sorted(p.name for p in folder.iterdir()) == ["scan_corrections.nii.gz"]


def test_replace_removes_the_same_layers_in_another_format(make_napari_viewer, tmp_path, notes, questions):
    asked, answers = questions
    _, panel = _panel_with_results(make_napari_viewer)
    section = panel.export_section
    section.folder_edit.setText(str(tmp_path))
    section.format_combo.setCurrentText(".nrrd")
    section.export()
    (tmp_path / "other_seg.nii.gz").write_bytes(b"another case")  # not this export's: left alone
    section.format_combo.setCurrentText(".nii.gz")
    answers.append(True)
    assert section.export() == [tmp_path / "scan_corrections.nii.gz"]
    assert asked == [["scan_corrections.nrrd"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other_seg.nii.gz", "scan_corrections.nii.gz"]


def test_a_locked_folder_and_an_unwritable_one_are_notifications(make_napari_viewer, tmp_path, notes, questions):
    viewer, panel = _panel_with_results(make_napari_viewer)
    section = panel.export_section
    folder = tmp_path / "export"
    folder.mkdir()
    section.folder_edit.setText(str(folder))
    with FolderLock(folder / LOCK_NAME, what=f"output folder {folder}"):
        assert section.export() == []
    assert notes[-1][0] == "error" and str(folder / LOCK_NAME) in notes[-1][1]
    assert sorted(p.name for p in folder.iterdir()) == []

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    section.folder_edit.setText(str(blocker / "export"))
    assert section.export() == []
    assert notes[-1][0] == "error" and str(blocker / "export") in notes[-1][1]
    assert viewer.layers["scan"].visible  # the viewer keeps running
    assert section.export_button.isEnabled()


def test_a_segmented_image_exports_its_report_last_in_the_set(make_napari_viewer, qtbot, home, tmp_path, notes, questions):
    asked, answers = questions
    bundle = tiny_bundle(home / "models", name="tiny-export-model")
    viewer, panel = _panel_with_results(make_napari_viewer)
    panel.model_section.select_path(bundle)
    panel.session.device = "cpu"
    assert panel.segment_section.run() is not None
    qtbot.waitUntil(lambda: not panel.jobs.busy, timeout=JOB_TIMEOUT_MS)
    section = panel.export_section
    section.folder_edit.setText(str(tmp_path))
    written = section.export()
    names = [path.name for path in written]
    assert names[-1] == "scan_report.json" and "scan_segmentation.nii.gz" in names
    report = (tmp_path / "scan_report.json").read_text()
    assert all(name in report for name in names[:-1])
    segmentation = read_volume(tmp_path / "scan_segmentation.nii.gz")
    np.testing.assert_array_equal(segmentation.array, viewer.layers["scan segmentation"].data)

    answers.append(False)
    assert section.export() == [] and set(asked[0]) >= set(names)
