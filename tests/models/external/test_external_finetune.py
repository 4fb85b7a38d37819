"""Fine-tuning nnU-Net folders and MONAI bundles on sparse strokes, written back in their own
format: the new nnU-Net folder runs through nnU-Net's own ``nnUNetPredictor`` with the same
labels as here, the new MONAI bundle through MONAI's own config parser; the parents stay
byte-identical."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2", reason="the nnunet extra is part of the test environment (make setup)")
pytest.importorskip("monai", reason="the monai extra is part of the test environment (make setup)")

from napari_medseg.io import read_volume, write_volume  # noqa: E402
from napari_medseg.models import load_model  # noqa: E402
from napari_medseg.models.external.finetuned import PROVENANCE_FILE  # noqa: E402
from napari_medseg.training.finetune import run_finetune  # noqa: E402
from napari_medseg.training.versions import save_result  # noqa: E402
from napari_medseg.types import Geometry, Volume  # noqa: E402
from tests.models.external.monai_bundle import oblique_scan, write_bundle  # noqa: E402
from tests.models.external.nnunet_folder import DATASET_NAME, PLANS, TRAINER, synthetic_case  # noqa: E402

SPACING = (2.0, 1.1, 0.9)  # z, y, x mm: not the plan's, so the strokes are resampled


def model_folder(root: Path, configuration: str) -> Path:
    return root / "results" / DATASET_NAME / f"{TRAINER}__{PLANS}__{configuration}"


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def strokes(labels: np.ndarray, slices) -> np.ndarray:
    """Sparse labels (0 = not annotated, k + 1 = class k): the truth on ``slices`` only."""
    sparse = np.zeros(labels.shape, np.uint8)
    sparse[slices] = labels[slices] + 1
    return sparse


def nnunet_predict(folder: Path, image: np.ndarray, folds) -> np.ndarray:
    """nnU-Net's own prediction: (K, z, y, x) probabilities, no mirroring."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                device=torch.device("cpu"), allow_tqdm=False)  # fmt: skip
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=folds)
    _, probabilities = predictor.predict_single_npy_array(image[None].astype(np.float32), {"spacing": list(SPACING)}, None, None, True)
    return probabilities


@pytest.mark.parametrize(("configuration", "keep"), [("3d_fullres", "network"), ("2d", "segmentation")])
def test_a_finetuned_nnunet_fold_is_an_nnunet_folder_its_predictor_runs(nnunet_results_root, tmp_path, monkeypatch, configuration, keep):
    monkeypatch.setenv("NAPARI_MEDSEG_HOME", str(tmp_path / "home"))
    parent_folder = model_folder(nnunet_results_root, configuration)
    before = digest(parent_folder)
    image, labels = synthetic_case(11, shape=(12, 34, 29))
    volume = Volume(image, Geometry(SPACING, (0.0, 0.0, 0.0)), modality="CT")
    parent = load_model(parent_folder)
    result = run_finetune(parent, [volume], [strokes(labels, np.s_[3:9:2])], steps=12, lr=3e-3, batch_size=2, seed=1,
                          precision="fp32", distill_target=keep)  # fmt: skip
    assert result.steps_done == 12 and result.metrics_after["accuracy"] > result.metrics_before["accuracy"]
    path = save_result(result, parent)
    assert path.parent == tmp_path / "home" / "models" / DATASET_NAME
    assert path.name.startswith(f"{TRAINER}_ft") and path.name.endswith(f"__{PLANS}__{configuration}")
    assert sorted(p.name for p in path.iterdir()) == sorted(["dataset.json", "plans.json", "fold_0", PROVENANCE_FILE]
                                                            + (["dataset_fingerprint.json"] if (parent_folder / "dataset_fingerprint.json").exists() else []))  # fmt: skip
    assert (path / "plans.json").read_bytes() == (parent_folder / "plans.json").read_bytes()
    record = json.loads((path / PROVENANCE_FILE).read_text())
    assert record["parent_path"] == str(parent_folder) and record["training"]["steps"] == 12 and record["version"] == 2
    assert record["training"]["fold"] == "0" and record["training"]["patch"] == list(parent.folder.patch_size)
    assert digest(parent_folder) == before  # the parent is never written

    from napari_medseg.models.external import find_models

    assert path in [info.path for info in find_models()]  # medseg models lists the version
    ours = load_model(path)
    assert list(ours.fold_states) == ["0"]
    for key, value in result.model.network.state_dict().items():  # what trained is what was written
        torch.testing.assert_close(ours.network.state_dict()[key], value, rtol=0, atol=0)
    probe, _ = synthetic_case(12, shape=(12, 34, 29))
    mine = ours.predict_volume(probe, SPACING, mirroring=False)
    theirs = nnunet_predict(path, probe, (0,))
    assert np.abs(mine - theirs).max() < 1e-3
    assert (mine.argmax(0) == theirs.argmax(0)).mean() >= 0.999
    assert not np.array_equal(mine, nnunet_predict(parent_folder, probe, (0,)))  # the fold did change


def test_a_finetuned_monai_bundle_stays_a_bundle_monai_runs(tmp_path, monkeypatch):
    from tests.models.external.test_monai_pipeline import monai_reference

    monkeypatch.setenv("NAPARI_MEDSEG_HOME", str(tmp_path / "home"))
    bundle = write_bundle(tmp_path / "bundle")
    torch.save({"not": "used"}, bundle / "models" / "model.ts")  # a TorchScript copy would be stale after fine-tuning
    before = digest(bundle)
    image, geometry = oblique_scan()
    volume = Volume(image, geometry, modality="CT")
    truth = (image > 150).astype(np.uint8) + (np.abs(image - 40) < 60).astype(np.uint8) * 2  # bright blob 1, tissue 2
    sparse = strokes(truth, np.s_[:, 8:12, :])
    parent = load_model(bundle)
    result = run_finetune(parent, [volume], [sparse], steps=12, lr=3e-3, batch_size=2, precision="fp32")
    assert result.metrics_after["accuracy"] > result.metrics_before["accuracy"]
    path = save_result(result, parent)
    assert path.parent == tmp_path / "home" / "models" and path.name.startswith("bundle-ft-")
    assert not (path / "models" / "model.ts").exists() and digest(bundle) == before
    from napari_medseg.models.external import find_models

    assert path in [info.path for info in find_models()]
    metadata = json.loads((path / "configs" / "metadata.json").read_text())
    assert metadata["version"].startswith("0.1.0+ft") and metadata["version"] in metadata["changelog"]

    scan = tmp_path / "scan.nii.gz"
    write_volume(scan, image, volume, kind="image")
    ours = load_model(path).predict_volume(read_volume(scan).array, geometry.spacing, geometry=read_volume(scan).geometry)
    theirs = monai_reference(path, scan)
    assert np.abs(ours - theirs).max() < 1e-3
    assert not np.allclose(theirs, monai_reference(bundle, scan), atol=1e-3)


def test_cli_finetunes_an_nnunet_folder_and_refuses_a_name_nnunet_cannot_read(nnunet_results_root, tmp_path, capsys):
    from napari_medseg.cli import main

    image, labels = synthetic_case(13, shape=(12, 34, 29))
    volume = Volume(image, Geometry(SPACING, (0.0, 0.0, 0.0)), modality="CT")
    write_volume(tmp_path / "scan.nii.gz", image, volume, kind="image")
    write_volume(tmp_path / "strokes.nii.gz", strokes(labels, np.s_[5:7]), volume, kind="labels")
    folder = model_folder(nnunet_results_root, "3d_fullres")
    base = ["finetune", "--model", str(folder), "--image", str(tmp_path / "scan.nii.gz"), "--labels",
            str(tmp_path / "strokes.nii.gz"), "--steps", "2", "--batch", "1", "--quiet"]  # fmt: skip
    assert main([*base, "-o", str(tmp_path / "my-version")]) == 2  # refused before the parent segments the scan
    assert "'my-version' is not nnU-Net's 'Trainer__Plans__configuration'" in capsys.readouterr().err
    assert not (tmp_path / "my-version").exists()
    out = tmp_path / "results" / DATASET_NAME / f"{TRAINER}_mine__{PLANS}__3d_fullres"
    assert main([*base, "-o", str(out)]) == 0
    assert f"bundle: {out}" in capsys.readouterr().out and (out / "fold_0" / "checkpoint_final.pth").is_file()


def test_the_panel_finetunes_a_monai_bundle_into_a_new_active_bundle(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """Segment, paint, Fine-tune in the panel: the new bundle becomes the active model, the
    parent's files are untouched, and re-segmenting uses the new weights."""
    from napari_medseg.contributions.layers import image_layer_data

    monkeypatch.setenv("NAPARI_MEDSEG_HOME", str(tmp_path / "home"))
    bundle = write_bundle(tmp_path / "bundle")
    before = digest(bundle)
    image, geometry = oblique_scan()
    viewer = make_napari_viewer()
    data, kwargs, _ = image_layer_data(Volume(image, geometry, modality="CT"), name="ct")
    viewer.layers.selection.active = layer = viewer.add_image(data, **kwargs)
    _, panel = viewer.window.add_plugin_dock_widget("napari-medseg", "Segmentation panel")
    panel.model_section.select_path(bundle)
    panel.session.device = "cpu"
    assert panel.segment_section.run() is not None
    qtbot.waitUntil(lambda: not panel.jobs.busy, timeout=120_000)
    first = np.array(viewer.layers["ct segmentation"].data)
    viewer.layers.selection.active = layer
    corrections = panel.correct_section.create()
    painted = np.array(corrections.data)
    painted[:, 9:11, :] = 2  # class 1 painted over two whole slices of the array
    corrections.data = painted
    panel.finetune_section.steps_spin.setValue(4)
    assert panel.finetune_section.run() is not None
    qtbot.waitUntil(lambda: not panel.jobs.busy, timeout=120_000)
    active = panel.session.model
    assert Path(active.bundle_path).parent == tmp_path / "home" / "models" and active.config.extra["external"] == "monai"
    assert digest(bundle) == before
    viewer.layers.selection.active = layer
    panel.finetune_section.resegment_button.click()
    qtbot.waitUntil(lambda: not panel.jobs.busy, timeout=120_000)
    assert not np.array_equal(np.asarray(viewer.layers["ct segmentation"].data), first)
