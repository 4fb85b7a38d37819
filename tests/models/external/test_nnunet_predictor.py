"""This project's nnU-Net inference against nnU-Net's own ``nnUNetPredictor``.

The model folders are real: planned by nnU-Net's experiment planner on a tiny synthetic CT
dataset in its raw format and saved by its own trainer (``nnunet_folder.py``, in its own
process). The same scan goes through both; labels must agree on >= 99.9% of voxels and the
probabilities within 1e-3, for 2d and 3d_fullres, with and without mirroring, two folds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch


pytest.importorskip("nnunetv2", reason="the nnunet extra is part of the test environment (make setup)")

from napari_medseg.models import load_model  # noqa: E402
from napari_medseg.models.external import find_models  # noqa: E402
from tests.models.external.nnunet_folder import DATASET_NAME, PLANS, TRAINER, synthetic_case  # noqa: E402

SPACING = (2.0, 1.1, 0.9)  # z, y, x mm: not the plan's, so both resample


@pytest.fixture(scope="module")
def nnunet_root(nnunet_results_root) -> Path:
    return nnunet_results_root


def model_folder(root: Path, configuration: str) -> Path:
    return root / "results" / DATASET_NAME / f"{TRAINER}__{PLANS}__{configuration}"


def reference(folder: Path, image: np.ndarray, mirroring: bool) -> np.ndarray:
    """nnU-Net's own prediction: (K, z, y, x) probabilities."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                device=torch.device("cpu"), allow_tqdm=False)  # fmt: skip
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=(0, 1))
    _, probabilities = predictor.predict_single_npy_array(
        image[None].astype(np.float32), {"spacing": list(SPACING)}, None, None, True
    )
    return probabilities


@pytest.mark.parametrize("configuration", ["2d", "3d_fullres"])
@pytest.mark.parametrize("mirroring", [False, True])
def test_probabilities_match_nnunet_predictor(nnunet_root, configuration, mirroring):
    folder = model_folder(nnunet_root, configuration)
    image, _ = synthetic_case(7, shape=(12, 34, 29))
    model = load_model(folder)
    assert model.config.class_names == ("background", "bone", "fat")
    assert list(model.fold_states) == ["0", "1"]
    ours = model.predict_volume(image, SPACING, mirroring=mirroring)
    theirs = reference(folder, image, mirroring)
    assert ours.shape == theirs.shape == (3, *image.shape)
    assert np.abs(ours - theirs).max() < 1e-3
    agreement = (ours.argmax(0) == theirs.argmax(0)).mean()
    assert agreement >= 0.999, agreement


def test_segment_gives_labels_on_the_scan_grid(nnunet_root):
    from napari_medseg.inference import segment
    from napari_medseg.types import Geometry, Volume

    image, _ = synthetic_case(8, shape=(12, 34, 29))
    direction = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    volume = Volume(image, Geometry(SPACING, (-3.5, 12.25, 100.125), direction), modality="CT")
    model = load_model(model_folder(nnunet_root, "3d_fullres"))
    result = segment(volume, model, device="cpu")
    expected = model.predict_volume(image, SPACING)
    assert result.labels.shape == image.shape and result.probabilities.shape == (*image.shape, 3)
    np.testing.assert_array_equal(result.probabilities, np.moveaxis(expected, 0, -1))
    assert result.class_names == ("background", "bone", "fat")


def test_models_found_under_nnunet_results(nnunet_root, monkeypatch):
    monkeypatch.setenv("nnUNet_results", str(nnunet_root / "results"))
    found = {info.configuration: info for info in find_models()}
    assert sorted(found) == ["2d", "3d_fullres"]
    assert found["2d"].folds == ("0", "1") and found["2d"].classes == ("background", "bone", "fat")


def test_cli_segment_and_models_take_the_folder(nnunet_root, tmp_path, monkeypatch, capsys):
    """``medseg segment --model PATH`` writes labels with the scan's exact geometry;
    ``medseg models`` lists the folders under ``$nnUNet_results``."""
    import json

    from napari_medseg.cli import main
    from napari_medseg.io import read_volume, write_volume
    from napari_medseg.types import Geometry, Volume

    image, _ = synthetic_case(9, shape=(12, 34, 29))
    scan = tmp_path / "ct.nii.gz"
    like = Volume(image, Geometry(SPACING, (-3.5, 12.25, 100.125)), modality="CT")
    write_volume(scan, image, like, kind="image")
    folder = model_folder(nnunet_root, "2d")
    assert main(["segment", str(scan), "-o", str(tmp_path / "out"), "--model", str(folder), "--device", "cpu"]) == 0
    labels = read_volume(tmp_path / "out" / "ct_seg.nii.gz")
    source = read_volume(scan)
    assert labels.geometry == source.geometry
    expected = load_model(folder).predict_volume(source.array, source.spacing).argmax(0)
    np.testing.assert_array_equal(labels.array, expected)
    capsys.readouterr()
    monkeypatch.setenv("nnUNet_results", str(nnunet_root / "results"))
    assert main(["models", "--json"]) == 0
    rows = [row for row in json.loads(capsys.readouterr().out) if row.get("kind") == "nnunet"]
    assert sorted(row["architecture"] for row in rows) == ["nnunet-2d", "nnunet-3d_fullres"]


def test_steps_it_lacks_are_refused_by_name(nnunet_root, tmp_path):
    from napari_medseg.explain.volume import grad_cam_volume
    from napari_medseg.models.external import ExternalModelError
    from napari_medseg.export.run import run_segmentation
    from napari_medseg.training.finetune import finetune
    from napari_medseg.types import Geometry, Volume

    image, labels = synthetic_case(10, shape=(12, 34, 29))
    volume = Volume(image, Geometry(SPACING, (0.0, 0.0, 0.0)), modality="CT")
    model = load_model(model_folder(nnunet_root, "2d"))
    with pytest.raises(ExternalModelError, match="mc-dropout needs dropout in the network"):  # see test_external_uncertainty
        run_segmentation(volume, model, tmp_path / "out", "ct", uncertainty="mc-dropout")
    with pytest.raises(ExternalModelError, match="Grad-CAM"):
        grad_cam_volume(model, image, target_class=1)
    with pytest.raises(ValueError, match="new classes \\['lesion'\\] cannot be added to nnunet models"):
        finetune(model, [volume], [labels], steps=1, new_classes=["lesion"])
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_panel_opens_the_folder_and_segments_with_it(nnunet_root, make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """Model > Open folder with an nnU-Net folder, then Segment: labels, volumes and the OOD
    decision as for a bundle."""
    from napari_medseg.contributions.layers import image_layer_data
    from napari_medseg.types import Geometry, Volume

    monkeypatch.setenv("NAPARI_MEDSEG_HOME", str(tmp_path / "home"))
    image, _ = synthetic_case(11, shape=(12, 34, 29))
    volume = Volume(image, Geometry(SPACING, (0.0, 0.0, 0.0)), modality="CT", meta={"source": str(tmp_path / "ct.nii.gz")})
    viewer = make_napari_viewer()
    data, kwargs, _ = image_layer_data(volume, name="ct")
    layer = viewer.add_image(data, **kwargs)
    _, panel = viewer.window.add_plugin_dock_widget("napari-medseg", "Segmentation panel")
    folder = model_folder(nnunet_root, "2d")
    panel.model_section.select_path(folder)
    assert panel.session.model is not None and panel.session.model.bundle_path == folder
    assert "nnunet" in panel.model_section.summary.text()
    panel.session.device = "cpu"
    viewer.layers.selection.active = layer
    assert panel.segment_section.run() is not None
    qtbot.waitUntil(lambda: not panel.jobs.busy, timeout=300_000)
    result = panel.session.segmentations["ct"]
    expected = panel.session.model.predict_volume(image, SPACING).argmax(0)
    np.testing.assert_array_equal(result.labels, expected)
    np.testing.assert_array_equal(viewer.layers["ct segmentation"].data, expected)
    assert "ood" in panel.session.reports["ct"]
    assert panel.quantify_section.table.rowCount() >= 1
