"""Uncertainty of nnU-Net folders and MONAI bundles, sampled their own way.

nnU-Net's ensemble is its folds (each without mirroring), its TTA its mirroring (one sample
per combination of the checkpoint's allowed axes); a MONAI bundle's TTA flips the roi's
three axes. The folders are real (nnU-Net's planner and trainer, ``nnunet_folder.py``); the
nnU-Net reference is its own ``nnUNetPredictor``. The trainer writes
``inference_allowed_mirroring_axes`` when training starts, and no training runs here, so the
folders used for TTA get the axes a trained checkpoint holds written into their checkpoints.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest


pytest.importorskip("nnunetv2", reason="the nnunet extra is part of the test environment (make setup)")
pytest.importorskip("monai", reason="the monai extra is part of the test environment (make setup)")

import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402

from napari_medseg.control import Cancelled  # noqa: E402
from napari_medseg.models import load_model  # noqa: E402
from napari_medseg.models.external import ExternalModelError, open_model  # noqa: E402
from napari_medseg.types import Geometry, Volume  # noqa: E402
from napari_medseg.uncertainty import estimate_uncertainty  # noqa: E402
from tests.models.external.monai_bundle import inference_config, oblique_scan, write_bundle  # noqa: E402
from tests.models.external.nnunet_folder import DATASET_NAME, PLANS, TRAINER, synthetic_case  # noqa: E402

SPACING = (2.0, 1.1, 0.9)  # z, y, x mm: not the plan's, so nnU-Net resamples both ways
SHAPE = (12, 34, 29)


@pytest.fixture(scope="module")
def nnunet_root(nnunet_results_root) -> Path:
    return nnunet_results_root / "results" / DATASET_NAME / f"{TRAINER}__{PLANS}__3d_fullres"


def variant(folder: Path, out: Path, *, mirror_axes=None, dropout: float | None = None) -> Path:
    """A copy of ``folder`` whose checkpoints allow ``mirror_axes``, and whose plans put
    ``Dropout3d(p=dropout)`` into each conv block (nnU-Net's network, built from the new
    plans, then holds the same weights under its shifted module names)."""
    target = out / folder.name
    shutil.copytree(folder, target)
    plans = json.loads((target / "plans.json").read_text())
    architecture = plans["configurations"]["3d_fullres"]["architecture"]
    if dropout is not None:
        architecture["arch_kwargs"].update(dropout_op="torch.nn.Dropout3d", dropout_op_kwargs={"p": dropout})
        (target / "plans.json").write_text(json.dumps(plans))
    for file in target.glob("fold_*/checkpoint_final.pth"):
        checkpoint = torch.load(file, weights_only=False)  # written by nnU-Net's trainer in this test run
        if mirror_axes is not None:  # () removes them, as in a checkpoint saved before training
            checkpoint["inference_allowed_mirroring_axes"] = tuple(mirror_axes) or None
        if dropout is not None:
            checkpoint["network_weights"] = _renamed(checkpoint["network_weights"], architecture)
        torch.save(checkpoint, file)
    return target


def _renamed(state: dict, architecture: dict) -> dict:
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    network = get_network_from_plans(architecture["network_class_name"], architecture["arch_kwargs"],
                                     architecture["_kw_requires_import"], 1, 3, deep_supervision=True)  # fmt: skip
    names = list(network.state_dict())
    assert [v.shape for v in network.state_dict().values()] == [v.shape for v in state.values()]
    return dict(zip(names, state.values()))


def scan(seed: int) -> Volume:
    image, _ = synthetic_case(seed, shape=SHAPE)
    return Volume(image, Geometry(SPACING, (-3.5, 12.25, 100.125)), modality="CT")


def check_maps(result, shape) -> None:
    """The decomposition's identity, exact in float32, and non-negative maps on ``shape``."""
    for values in (result.total, result.aleatoric, result.epistemic):
        assert values.shape == shape and values.dtype == np.float32 and values.min() >= 0
    np.testing.assert_array_equal(result.total, result.aleatoric + result.epistemic)
    assert result.mean_probabilities.shape == (*shape, 3)
    np.testing.assert_allclose(result.mean_probabilities.sum(-1), 1.0, atol=1e-5)
    assert result.epistemic.max() > 1e-3 and not result.postprocessed


def nnunet_fold(folder: Path, image: np.ndarray, fold: int) -> np.ndarray:
    """nnU-Net's own prediction of one fold without mirroring: (K, z, y, x) probabilities."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                device=torch.device("cpu"), allow_tqdm=False)  # fmt: skip
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=(fold,))
    _, probabilities = predictor.predict_single_npy_array(image[None].astype(np.float32), {"spacing": list(SPACING)},
                                                          None, None, True)  # fmt: skip
    return probabilities


def test_nnunet_ensemble_mean_is_the_mean_of_nnunets_own_fold_predictions(nnunet_root):
    """The ensemble's mean probability averages the two folds' probabilities; nnU-Net's
    two-fold prediction averages their logits, a different quantity (on these untrained
    folds, which disagree, by a lot). So the reference is nnU-Net's ``nnUNetPredictor``
    run once per fold without mirroring, its probabilities averaged."""
    volume = scan(7)
    result = estimate_uncertainty(volume, load_model(nnunet_root), method="ensemble", device="cpu")
    assert (result.method, result.samples) == ("ensemble", 2)
    check_maps(result, SHAPE)
    reference = np.mean([nnunet_fold(nnunet_root, volume.array, fold) for fold in (0, 1)], axis=0)
    assert np.abs(np.moveaxis(result.mean_probabilities, -1, 0) - reference).max() < 1e-3


def test_nnunet_tta_draws_one_sample_per_mirror_combination(nnunet_root, tmp_path):
    folder = variant(nnunet_root, tmp_path, mirror_axes=(1, 2))
    model = load_model(folder)
    volume = scan(8)
    seen = []
    result = estimate_uncertainty(volume, model, method="tta", samples=3, device="cpu",
                                  progress=lambda done, total: seen.append((done, total)))  # fmt: skip
    assert (result.method, result.samples) == ("tta", 4)  # (), (y,), (x,), (y, x); samples does not apply
    check_maps(result, SHAPE)
    assert seen[-1][0] == seen[-1][1] == len(seen) and len(seen) % 4 == 0
    first = next(model.sample_probabilities(volume.array, SPACING, method="tta"))
    np.testing.assert_array_equal(first, model.predict_volume(volume.array, SPACING, mirroring=False))


def test_nnunet_mc_dropout_needs_dropout_and_is_seeded(nnunet_root, tmp_path):
    model = load_model(variant(nnunet_root, tmp_path, dropout=0.3))
    volume = scan(9)
    state = torch.get_rng_state()
    first = estimate_uncertainty(volume, model, method="mc-dropout", samples=2, device="cpu", seed=4)
    assert (first.method, first.samples) == ("mc-dropout", 2)
    check_maps(first, SHAPE)
    again = estimate_uncertainty(volume, model, method="mc-dropout", samples=2, device="cpu", seed=4)
    np.testing.assert_array_equal(first.total, again.total)
    assert torch.equal(torch.get_rng_state(), state)
    assert not any(module.training for module in model.modules())


def test_what_cannot_be_sampled_is_refused_with_the_model_and_the_reason(nnunet_root, tmp_path):
    from napari_medseg.export.run import run_segmentation

    volume = scan(10)
    one_fold = open_model(nnunet_root, folds=["0"])
    with pytest.raises(ExternalModelError, match=r"ensemble uses the folds .*3d_fullres has one \(fold_0\)"):
        estimate_uncertainty(volume, one_fold, method="ensemble")
    model = load_model(nnunet_root)
    with pytest.raises(ExternalModelError, match=r"mc-dropout needs dropout .*3d_fullres has none \(it has no dropout"):
        run_segmentation(volume, model, tmp_path / "out", "ct", uncertainty="mc-dropout")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    unmirrored = load_model(variant(nnunet_root, tmp_path / "unmirrored", mirror_axes=()))
    with pytest.raises(ExternalModelError, match="tta mirrors the checkpoint's allowed axes .* allows none"):
        estimate_uncertainty(volume, unmirrored, method="tta")
    with pytest.raises(ValueError, match="cannot be combined with other models"):
        estimate_uncertainty(volume, [model, one_fold], method="ensemble")
    image, geometry = oblique_scan()
    bundle = load_model(write_bundle(tmp_path / "bundle"))
    with pytest.raises(ExternalModelError, match=r"ensemble needs several networks and MONAI bundle bundle \(UNet\) is one"):
        estimate_uncertainty(Volume(image, geometry, modality="CT"), bundle, method="ensemble")
    with pytest.raises(ExternalModelError, match=r"mc-dropout .* MONAI bundle bundle \(UNet\) has none \(its 6 dropout modules all have p = 0\)"):
        estimate_uncertainty(Volume(image, geometry, modality="CT"), bundle, method="mc-dropout")


def test_stop_midway_raises_cancelled_and_leaves_the_model_as_found(nnunet_root):
    model = load_model(nnunet_root)
    calls = []
    with pytest.raises(Cancelled):  # stops in the second fold, after its first window
        estimate_uncertainty(scan(11), model, method="ensemble", device="cpu",
                             progress=lambda done, total: calls.append((done, total)),
                             should_stop=lambda: bool(calls) and calls[-1][0] > calls[-1][1] // 2)  # fmt: skip
    done, total = calls[-1]
    assert done == total // 2 + 1 < total
    assert model.active_fold == "0" and not any(module.training for module in model.modules())


def test_monai_tta_flips_the_roi_axes_and_mc_dropout_samples_its_dropout(tmp_path):
    image, geometry = oblique_scan()
    volume = Volume(image, geometry, modality="CT")
    model = load_model(write_bundle(tmp_path / "plain"))
    result = estimate_uncertainty(volume, model, method="tta", device="cpu")
    assert (result.method, result.samples) == ("tta", 8)
    check_maps(result, image.shape)
    first = next(model.sample_probabilities(image, geometry.spacing, method="tta", geometry=geometry))
    np.testing.assert_array_equal(first, model.predict_volume(image, geometry.spacing, geometry=geometry))
    config = inference_config()
    config["network_def"]["dropout"] = 0.3
    dropout = load_model(write_bundle(tmp_path / "dropout", config))
    sampled = estimate_uncertainty(volume, dropout, method="mc-dropout", samples=2, device="cpu")
    assert (sampled.method, sampled.samples) == ("mc-dropout", 2)
    check_maps(sampled, image.shape)


@pytest.mark.parametrize("kind, method, samples", [("nnunet", "ensemble", 2), ("monai", "tta", 8)])
def test_cli_writes_the_maps_on_the_exact_input_grid(nnunet_root, tmp_path, kind, method, samples):
    from napari_medseg.cli import main
    from napari_medseg.io import write_volume

    if kind == "nnunet":
        volume, model = scan(12), nnunet_root
    else:
        image, geometry = oblique_scan()
        volume, model = Volume(image, geometry, modality="CT"), write_bundle(tmp_path / "bundle")
    source = tmp_path / "ct.nii.gz"
    write_volume(source, volume.array, volume, kind="image")
    out = tmp_path / "out"
    assert main(["segment", str(source), "-o", str(out), "--model", str(model), "--uncertainty", method,
                 "--device", "cpu", "--quiet"]) == 0  # fmt: skip
    reference = sitk.ReadImage(str(source))
    maps = {}
    for key in ("entropy", "aleatoric", "epistemic"):
        written = sitk.ReadImage(str(out / f"ct_{key}.nii.gz"))
        assert written.GetSize() == reference.GetSize() and written.GetOrigin() == reference.GetOrigin()
        assert written.GetSpacing() == reference.GetSpacing() and written.GetDirection() == reference.GetDirection()
        maps[key] = sitk.GetArrayFromImage(written)
    np.testing.assert_array_equal(maps["entropy"], maps["aleatoric"] + maps["epistemic"])
    assert min(values.min() for values in maps.values()) >= 0
    report = json.loads((out / "ct_report.json").read_text())
    assert report["uncertainty"]["method"] == method and report["uncertainty"]["samples"] == samples
    assert report["uncertainty"]["postprocessed"] is False


def test_the_panel_estimates_an_nnunet_folds_ensemble(nnunet_root, make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """Uncertainty section, sampler "ensemble", with an nnU-Net folder opened: its folds,
    shown as the three layers; no second model is looked for."""
    from napari_medseg.contributions.layers import image_layer_data

    monkeypatch.setenv("NAPARI_MEDSEG_HOME", str(tmp_path / "home"))
    volume = scan(13)
    viewer = make_napari_viewer()
    data, kwargs, _ = image_layer_data(volume, name="ct")
    viewer.layers.selection.active = viewer.add_image(data, **kwargs)
    _, panel = viewer.window.add_plugin_dock_widget("napari-medseg", "Segmentation panel")
    panel.model_section.select_path(nnunet_root)
    panel.session.device = "cpu"
    section = panel.uncertainty_section
    section.method_combo.setCurrentText("ensemble")
    assert section.run() is not None
    qtbot.waitUntil(lambda: not panel.jobs.busy, timeout=300_000)
    layer = viewer.layers["ct total uncertainty [ensemble, 2 samples]"]
    assert layer.data.shape == SHAPE and panel.session.reports["ct"]["uncertainty"]["samples"] == 2
