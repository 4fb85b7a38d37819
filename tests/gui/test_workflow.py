"""The whole workflow in a real, shown viewer: load, segment, explain, uncertainty, correct,
fine-tune, re-segment, quantify, export — with a screenshot of each stage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_medseg.io import read_volume
from tests.tiny_models import tiny_bundle

pytestmark = pytest.mark.gui
JOB_TIMEOUT_MS = 180_000


def _wait_for_job(qtbot, panel) -> None:
    qtbot.waitUntil(lambda: not panel.jobs.busy, timeout=JOB_TIMEOUT_MS)


def _snapshot(viewer, artifacts_dir, name: str) -> np.ndarray:
    import imageio.v3 as iio

    shot = viewer.screenshot(canvas_only=False, flash=False)
    iio.imwrite(artifacts_dir / f"workflow_{name}.png", shot)
    rgb = shot[..., :3].astype(float)
    assert rgb.std() > 10, f"{name}: screenshot looks blank"
    return shot


def test_full_workflow(make_napari_viewer, qtbot, shared_data, artifacts_dir, home, tmp_path):
    bundle = tiny_bundle(home / "models", name="tiny-test-model", postprocess={"largest_component": True})
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1500, 1000)
    source_path = shared_data / "dev-subject" / "t1.nii.gz"
    (image,) = viewer.open(str(source_path), plugin="napari-medseg")
    _, panel = viewer.window.add_plugin_dock_widget("napari-medseg", "Segmentation panel")
    panel.model_section.select_path(bundle)
    assert panel.session.model.bundle_path == bundle
    panel.session.device = "cpu"
    _snapshot(viewer, artifacts_dir, "1_loaded")

    # segment
    assert panel.segment_section.run() is not None
    assert not panel.segment_section.isEnabled()  # controls locked while the job runs
    _wait_for_job(qtbot, panel)
    assert panel.segment_section.isEnabled()
    seg_layer = viewer.layers["t1 segmentation"]
    assert seg_layer.data.shape == image.data.shape
    np.testing.assert_allclose(seg_layer.data_to_world([10, 20, 30]), image.data_to_world([10, 20, 30]))
    assert panel.quantify_section.table.rowCount() >= 3
    _snapshot(viewer, artifacts_dir, "2_segmented")

    # explain
    panel.explain_section.class_combo.setCurrentText("grey matter")
    panel.explain_section.run()
    _wait_for_job(qtbot, panel)
    cam = viewer.layers["t1 Grad-CAM grey matter"]
    assert cam.blending == "translucent" and cam.colormap.name.startswith("turbo") and cam.colorbar.visible
    assert np.all(np.asarray(cam.data) >= 0)
    _snapshot(viewer, artifacts_dir, "3_gradcam")

    # uncertainty
    panel.uncertainty_section.samples_spin.setValue(3)
    panel.uncertainty_section.run()
    _wait_for_job(qtbot, panel)
    names = [layer.name for layer in viewer.layers]
    for kind in ("total uncertainty", "aleatoric", "epistemic"):
        assert any(name.startswith(f"t1 {kind} [mc-dropout") for name in names), names
    assert "OOD score" in panel.uncertainty_section.ood_label.text()
    _snapshot(viewer, artifacts_dir, "4_uncertainty")

    # correct: a painted stroke and an accepted slice
    corrections = panel.correct_section.create()
    data = corrections.data
    data[70, 80:90, 60:70] = 3  # class 2 (grey matter) painted
    corrections.data = data
    viewer.dims.set_point(0, float(image.data_to_world([71, 0, 0])[0]))
    accepted = panel.correct_section.accept_current_slice()
    assert accepted > 0 and np.any(corrections.data > 0)
    saved = panel.correct_section.autosave_now()
    assert saved and saved[0].is_file()
    _snapshot(viewer, artifacts_dir, "5_corrections")

    # fine-tune: a new version appears and becomes active; the parent is untouched
    parent_hash = (bundle / "weights.pt").read_bytes()
    panel.finetune_section.steps_spin.setValue(3)
    panel.finetune_section.run()
    _wait_for_job(qtbot, panel)
    active = panel.session.model
    assert active.bundle_path != bundle and active.bundle_meta["parent_id"] == json.loads((bundle / "meta.json").read_text())["id"]
    assert (bundle / "weights.pt").read_bytes() == parent_hash
    assert active.bundle_meta["training"]["forgetting"]["distill_target"] == "segmentation"  # the panel's default
    assert active.bundle_meta["training"]["distill_reference"] == "given"  # the segmentation the user corrected

    # re-segment with the new version, then quantify
    panel.finetune_section.resegment_button.click()
    _wait_for_job(qtbot, panel)
    panel.quantify_section.centre_on(0)
    _snapshot(viewer, artifacts_dir, "6_resegmented")

    # export with the source geometry
    panel.export_section.folder_edit.setText(str(tmp_path / "export"))
    written = panel.export_section.export()
    source = read_volume(source_path)
    segmentation_file = next(p for p in written if p.name.startswith("t1_segmentation"))
    exported = read_volume(segmentation_file)
    assert exported.geometry == source.geometry and exported.array.dtype == np.uint8
    np.testing.assert_array_equal(exported.array, viewer.layers["t1 segmentation"].data)
    report = json.loads(next(p for p in written if p.name.endswith("_report.json")).read_text())
    assert report["model"]["name"] == active.bundle_meta["name"]
    assert "uncertainty" in report and "ood" in report


def test_stop_button_cancels_segmentation(make_napari_viewer, qtbot, shared_data, home):
    bundle = tiny_bundle(home / "models", name="tiny-stop-model")
    viewer = make_napari_viewer(show=True)
    viewer.open(str(shared_data / "dev-subject" / "t1.nii.gz"), plugin="napari-medseg")
    _, panel = viewer.window.add_plugin_dock_widget("napari-medseg", "Segmentation panel")
    panel.model_section.select_path(bundle)
    panel.jobs.request_stop()  # a stop requested before the first batch ends the job at once
    worker = panel.segment_section.run()
    panel.jobs.request_stop()
    _wait_for_job(qtbot, panel)
    assert worker is not None
    assert "stopped" in panel.status_label.text()
    assert "t1 segmentation" not in viewer.layers
    assert panel.segment_section.isEnabled()


def test_bad_model_folder_becomes_a_notification(make_napari_viewer, tmp_path, home):
    viewer = make_napari_viewer(show=True)
    _, panel = viewer.window.add_plugin_dock_widget("napari-medseg", "Segmentation panel")
    bad = tmp_path / "not-a-bundle"
    bad.mkdir()
    (bad / "config.json").write_text("{broken")
    panel.model_section.load(bad)
    assert "Not loaded" in panel.model_section.summary.text()


def test_ct_given_to_the_mr_model_is_a_notification(make_napari_viewer, qtbot, pydicom_files, home):
    from napari.utils.notifications import notification_manager

    bundle = tiny_bundle(home / "models", name="tiny-mr-model")
    viewer = make_napari_viewer(show=True)
    (image,) = viewer.open(str(pydicom_files / "CT_small.dcm"), plugin="napari-medseg")
    _, panel = viewer.window.add_plugin_dock_widget("napari-medseg", "Segmentation panel")
    panel.model_section.select_path(bundle)
    panel.session.device = "cpu"
    before = len(notification_manager.records)
    assert panel.segment_section.run() is not None
    _wait_for_job(qtbot, panel)
    messages = [str(record.message) for record in notification_manager.records[before:]]
    assert any("modality is CT" in message and "trained on MR" in message for message in messages), messages
    assert f"{image.name} segmentation" in viewer.layers  # a warning, not a refusal


def test_stop_button_ends_fine_tuning_with_a_valid_version(make_napari_viewer, qtbot, shared_data, home):
    from napari_medseg.models import load_model

    bundle = tiny_bundle(home / "models", name="tiny-finetune-stop")
    viewer = make_napari_viewer(show=True)
    (image,) = viewer.open(str(shared_data / "dev-subject" / "t1.nii.gz"), plugin="napari-medseg")
    _, panel = viewer.window.add_plugin_dock_widget("napari-medseg", "Segmentation panel")
    panel.model_section.select_path(bundle)
    panel.session.device = "cpu"
    corrections = panel.correct_section.create()
    data = corrections.data
    data[70, 80:90, 60:70] = 2
    corrections.data = data
    panel.finetune_section.steps_spin.setValue(5000)
    panel.finetune_section.keep_combo.setCurrentIndex(panel.finetune_section.keep_combo.findData("network"))
    assert panel.finetune_section.run() is not None
    qtbot.waitUntil(lambda: "step" in panel.status_label.text(), timeout=JOB_TIMEOUT_MS)  # training has begun
    panel.stop_button.click()
    _wait_for_job(qtbot, panel)
    assert panel.finetune_section.isEnabled()
    active = panel.session.model
    assert active.bundle_path != bundle  # the steps taken so far became a new, loadable version
    training = active.bundle_meta["training"]
    assert training["stopped"] is True and 0 < training["steps"] < 5000
    assert training["forgetting"]["distill_target"] == "network"  # as chosen in "Keep elsewhere"
    assert load_model(active.bundle_path, device="cpu").config == active.config
    assert (bundle / "weights.pt").is_file()


def test_a_structure_bundle_shows_asymmetry_and_exports_its_label_values(make_napari_viewer, qtbot, shared_data, home, tmp_path):
    """A bundle that writes its own label values (FreeSurfer-style ids) for paired structures."""
    import torch

    from napari_medseg.config import ModelConfig
    from napari_medseg.models import build_model, save_bundle
    from napari_medseg.widgets.sections.quantify import COLUMNS
    from tests.tiny_models import tiny_config

    data = tiny_config().to_dict()
    data["class_names"] = ["background", "left hippocampus", "right hippocampus", "CSF"]
    data["extra"]["label_values"] = [0, 17, 53, 24]
    torch.manual_seed(3)
    bundle = save_bundle(build_model(ModelConfig.from_dict(data)).eval(), home / "models" / "structures", meta={})
    viewer = make_napari_viewer(show=True)
    (image,) = viewer.open(str(shared_data / "dev-subject" / "t1.nii.gz"), plugin="napari-medseg")
    _, panel = viewer.window.add_plugin_dock_widget("napari-medseg", "Segmentation panel")
    panel.model_section.select_path(bundle)
    panel.session.device = "cpu"
    panel.segment_section.run()
    _wait_for_job(qtbot, panel)

    table = panel.quantify_section.table
    column = COLUMNS.index("L-R asymmetry (%)")
    rows = {table.item(r, 0).text(): r for r in range(table.rowCount()) if table.item(r, 1).text() == "all"}
    left = viewer.layers["t1 segmentation"].data == 1
    right = viewer.layers["t1 segmentation"].data == 2
    assert left.any() and right.any()  # the seed's random network labels both somewhere
    expected = 200 * (left.sum() - right.sum()) / (left.sum() + right.sum())
    assert float(table.item(rows["left hippocampus"], column).text()) == pytest.approx(expected, abs=0.06)
    assert table.item(rows["CSF"], column).text() == ""

    corrections = panel.correct_section.create()
    painted = corrections.data
    painted[70, 80:90, 60:70] = 3
    corrections.data = painted
    panel.export_section.folder_edit.setText(str(tmp_path / "export"))
    written = panel.export_section.export()
    segmentation = read_volume(next(p for p in written if p.name.startswith("t1_segmentation"))).array
    np.testing.assert_array_equal(segmentation, np.array([0, 17, 53, 24])[viewer.layers["t1 segmentation"].data])
    exported_corrections = read_volume(next(p for p in written if "correction" in p.name)).array
    np.testing.assert_array_equal(exported_corrections, corrections.data)  # strokes keep the k+1 convention


def test_the_refine_box_follows_the_model_and_reaches_the_labels(make_napari_viewer, qtbot, shared_data, home):
    refinement = {"em_refine": {"prior_weight": 1.0, "keep_background": True, "on_request": True}}
    offering = tiny_bundle(home / "models", name="tiny-refined", postprocess=refinement)
    plain = tiny_bundle(home / "models", name="tiny-plain")
    viewer = make_napari_viewer(show=True)
    (image,) = viewer.open(str(shared_data / "dev-subject" / "t1.nii.gz"), plugin="napari-medseg")
    _, panel = viewer.window.add_plugin_dock_widget("napari-medseg", "Segmentation panel")
    box = panel.segment_section.refine_check
    panel.model_section.select_path(plain)
    assert not box.isEnabled()
    panel.model_section.select_path(offering)
    assert box.isEnabled() and not box.isChecked() and not panel.session.refine
    box.setChecked(True)
    assert panel.session.refine
    panel.session.device = "cpu"
    assert panel.segment_section.run() is not None
    _wait_for_job(qtbot, panel)
    record = panel.session.segmentations[image.name].postprocess
    assert record["em_refine"]["on_request"] and "mixture" in record["applied"]
    panel.model_section.select_path(plain)  # a model without a refinement unticks the box
    assert not box.isEnabled() and not box.isChecked() and not panel.session.refine
