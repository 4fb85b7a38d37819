"""Grad-CAM of nnU-Net folders and MONAI bundles, computed where they run.

The references are independent of this project's Grad-CAM code: a map computed in the test
with a torch hook on MONAI's preprocessed tensor (MONAI's ``ConfigParser`` running the
bundle's own transforms) and mapped back with ``Invertd``; and for nnU-Net, on a scan at the
plan's spacing and of the patch's size (one window, nothing to resample or crop), a map
from nnU-Net's own predictor's network and fold weights on nnU-Net's preprocessed array,
averaged over the folds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


pytest.importorskip("nnunetv2", reason="the nnunet extra is part of the test environment (make setup)")
pytest.importorskip("monai", reason="the monai extra is part of the test environment (make setup)")

import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from napari_medseg.control import Cancelled  # noqa: E402
from napari_medseg.explain import explain_scan  # noqa: E402
from napari_medseg.io import read_volume, write_volume  # noqa: E402
from napari_medseg.models import load_model  # noqa: E402
from napari_medseg.types import Geometry, Volume  # noqa: E402
from tests.models.external.monai_bundle import inference_config, oblique_scan, write_bundle  # noqa: E402
from tests.models.external.nnunet_folder import DATASET_NAME, PLANS, TRAINER, synthetic_case  # noqa: E402

PLAN_SPACING = (2.5, 1.0, 1.2)  # z, y, x mm: the 3d_fullres plan's, so nnU-Net neither resamples nor crops
PATCH = (14, 32, 28)  # the 3d_fullres patch: a scan of this size is one window


@pytest.fixture(scope="module")
def nnunet_folder(nnunet_results_root) -> Path:
    return nnunet_results_root / "results" / DATASET_NAME / f"{TRAINER}__{PLANS}__3d_fullres"


def nnunet_scan(seed: int, shape=(12, 34, 29), spacing=(2.0, 1.1, 0.9)) -> Volume:
    image, _ = synthetic_case(seed, shape=shape)
    return Volume(image, Geometry(spacing, (-3.5, 12.25, 100.125)), modality="CT")


def monai_scan() -> Volume:
    image, geometry = oblique_scan()
    return Volume(image, geometry, modality="CT")


def hook_cam(network, layer: str, x: torch.Tensor, target: int, region: torch.Tensor) -> torch.Tensor:
    """Grad-CAM by hand: ReLU(sum_c mean(dS/dA_c) A_c), S = the target's logits over ``region``,
    upsampled trilinearly to ``x``'s size; (1, *S)."""
    store = {}
    handle = dict(network.named_modules())[layer].register_forward_hook(lambda m, i, o: store.update(a=o))
    try:
        logits = network(x)
        (grads,) = torch.autograd.grad((logits[0, target] * region).sum(), store["a"])
    finally:
        handle.remove()
    weights = grads.mean(dim=(2, 3, 4), keepdim=True)
    cam = torch.relu((weights * store["a"]).sum(dim=1, keepdim=True))
    return F.interpolate(cam, size=x.shape[2:], mode="trilinear", align_corners=False)[0].detach()


@pytest.mark.parametrize("kind", ["nnunet", "monai"])
def test_cli_writes_the_map_on_the_exact_input_grid(nnunet_folder, tmp_path, kind):
    from napari_medseg.cli import main

    volume, model = (nnunet_scan(1), nnunet_folder) if kind == "nnunet" else (monai_scan(), write_bundle(tmp_path / "b"))
    source = tmp_path / "ct.nii.gz"
    write_volume(source, volume.array, volume, kind="image")
    out = tmp_path / "out"
    assert main(["segment", str(source), "-o", str(out), "--model", str(model), "--gradcam", "1", "--device", "cpu",
                 "--quiet"]) == 0  # fmt: skip
    written, reference = sitk.ReadImage(str(next(out.glob("ct_gradcam_*.nii.gz")))), sitk.ReadImage(str(source))
    assert written.GetSize() == reference.GetSize() and written.GetOrigin() == reference.GetOrigin()
    assert written.GetSpacing() == reference.GetSpacing() and written.GetDirection() == reference.GetDirection()
    cam = sitk.GetArrayFromImage(written)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "ct_seg.nii.gz")))
    assert cam.dtype == np.float32 and np.isfinite(cam).all() and cam.min() >= 0
    assert (labels == 1).any() and cam.max() > 0
    report = json.loads((out / "ct_report.json").read_text())["gradcam"]
    assert report["layer"] == ("decoder.stages.1" if kind == "nnunet" else "model.1.submodule")
    assert report.get("folds_averaged") == (["0", "1"] if kind == "nnunet" else None)


def test_nnunet_map_matches_a_hook_on_its_own_predictor(nnunet_folder):
    """One window on nnU-Net's preprocessed array: the folds' maps averaged, no mirroring."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    volume = nnunet_scan(2, shape=PATCH, spacing=PLAN_SPACING)
    predictor = nnUNetPredictor(use_mirroring=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(nnunet_folder), use_folds=(0, 1))
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    data, _, _ = preprocessor.run_case_npy(volume.array[None].astype(np.float32), None, {"spacing": list(PLAN_SPACING)},
                                           predictor.plans_manager, predictor.configuration_manager,
                                           predictor.dataset_json)  # fmt: skip
    assert data.shape[1:] == PATCH
    x = torch.from_numpy(data)[None]
    network = predictor.network.eval()
    region = torch.from_numpy(volume.array > 150)  # the bright blob, as a user might draw it
    maps = []
    for parameters in predictor.list_of_parameters:
        network.load_state_dict(parameters)
        maps.append(hook_cam(network, "decoder.stages.1", x, 1, region.float()))
    reference = torch.stack(maps).mean(0)[0].numpy()
    ours = explain_scan(volume, load_model(nnunet_folder), target_class=1, region=region.numpy())
    assert reference.max() > 0
    assert np.abs(ours - reference).max() <= 1e-4 * reference.max()


def test_monai_map_matches_a_hook_on_monais_preprocessed_tensor(tmp_path):
    """SimpleInferer (the whole volume is the roi): MONAI's ConfigParser builds the bundle's
    transforms and network; the map is taken by hand and mapped back by Invertd."""
    from monai.bundle import ConfigParser
    from monai.data import MetaTensor
    from monai.transforms import Invertd

    config = inference_config()
    config["inferer"] = {"_target_": "SimpleInferer"}
    config["preprocessing"]["transforms"].insert(-1, {"_target_": "DivisiblePadd", "keys": "image", "k": 4})
    bundle = write_bundle(tmp_path / "bundle", config)
    volume = monai_scan()
    scan = tmp_path / "scan.nii.gz"
    write_volume(scan, volume.array, volume, kind="image")
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    preprocessing = parser.get_parsed_content("preprocessing")
    network = parser.get_parsed_content("network_def").eval()
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    data = preprocessing({"image": str(scan)})
    x = data["image"].as_tensor()[None]
    with torch.no_grad():
        region = network(x)[0].argmax(0) == 2
    cam = hook_cam(network, "model.1.submodule", x, 2, region.float())
    invert = Invertd("pred", transform=preprocessing, orig_keys="image", nearest_interp=False)
    reference = invert({**data, "pred": MetaTensor(cam)})["pred"].numpy()[0].transpose(2, 1, 0)
    ours = explain_scan(read_volume(scan), load_model(bundle), target_class="spleen")
    assert ours.shape == reference.shape == volume.shape and reference.max() > 0
    assert np.abs(ours - reference).max() <= 1e-4 * reference.max()


@pytest.mark.parametrize("kind", ["nnunet", "monai"])
def test_the_predicted_mask_given_as_a_region_gives_the_same_map(nnunet_folder, tmp_path, kind):
    """On grids the model maps exactly (nnU-Net: the plan's spacing; MONAI: axis flips only),
    the default region is the prediction, so giving the predicted mask changes nothing."""
    if kind == "nnunet":
        volume, model = nnunet_scan(3, shape=(14, 32, 34), spacing=PLAN_SPACING), load_model(nnunet_folder)
        predicted = model.predict_volume(volume.array, volume.spacing, mirroring=False).argmax(0)
    else:
        config = inference_config()
        transforms = config["preprocessing"]["transforms"]
        config["preprocessing"]["transforms"] = [t for t in transforms if t["_target_"] != "Spacingd"]
        volume = Volume(monai_scan().array, Geometry((2.5, 0.9, 1.1), (1.5, -2.0, 3.0)))
        model = load_model(write_bundle(tmp_path / "b", config))
        predicted = model.predict_volume(volume.array, volume.spacing, geometry=volume.geometry).argmax(0)
    default = explain_scan(volume, model, target_class=2)
    given = explain_scan(volume, model, target_class=2, region=predicted == 2)
    assert default.max() > 0
    np.testing.assert_allclose(given, default, rtol=0, atol=1e-6 * default.max())


def test_a_wrong_layer_is_refused_naming_it_and_some_valid_ones(nnunet_folder, tmp_path):
    with pytest.raises(ValueError, match=r"layer 'decoder\.nope' is not a module .*'encoder'"):
        explain_scan(nnunet_scan(4), load_model(nnunet_folder), target_class=1, layer="decoder.nope")
    with pytest.raises(ValueError, match=r"layer 'upcat_1' is not a module .*'model\.0'"):
        explain_scan(monai_scan(), load_model(write_bundle(tmp_path / "b")), target_class=1, layer="upcat_1")


def test_gradcam_plus_plus_and_a_chosen_layer_run(tmp_path):
    volume, model = monai_scan(), load_model(write_bundle(tmp_path / "b"))
    cam = explain_scan(volume, model, target_class=1, method="gradcam++", layer="model.1")
    assert cam.shape == volume.shape and np.isfinite(cam).all() and cam.min() >= 0 and cam.max() > 0


@pytest.mark.parametrize("kind", ["nnunet", "monai"])
def test_stop_raises_cancelled_and_leaves_the_model_as_found(nnunet_folder, tmp_path, kind):
    if kind == "nnunet":
        volume, model = nnunet_scan(5), load_model(nnunet_folder)
    else:
        volume, model = monai_scan(), load_model(write_bundle(tmp_path / "b"))
    calls = []
    with pytest.raises(Cancelled):  # in the map's windows, after the default region's prediction
        explain_scan(volume, model, target_class=1, progress=lambda done, total: calls.append((done, total)),
                     should_stop=lambda: bool(calls) and calls[-1][0] > calls[-1][1] // 2)  # fmt: skip
    done, total = calls[-1]
    assert total // 2 < done < total
    assert not any(module.training or module._forward_hooks for module in model.modules())
    assert getattr(model, "active_fold", "0") == "0"


def test_the_panel_explains_with_a_monai_bundle(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from napari_medseg.contributions.layers import image_layer_data

    monkeypatch.setenv("NAPARI_MEDSEG_HOME", str(tmp_path / "home"))
    volume = monai_scan()
    viewer = make_napari_viewer()
    data, kwargs, _ = image_layer_data(volume, name="ct")
    viewer.layers.selection.active = viewer.add_image(data, **kwargs)
    _, panel = viewer.window.add_plugin_dock_widget("napari-medseg", "Segmentation panel")
    panel.model_section.select_path(write_bundle(tmp_path / "bundle"))
    panel.session.device = "cpu"
    section = panel.explain_section
    section.refresh_regions()
    section.class_combo.setCurrentText("liver")
    assert section.layer_edit.placeholderText() == "model.1.submodule"
    assert section.run() is not None
    qtbot.waitUntil(lambda: not panel.jobs.busy, timeout=120_000)
    layer = viewer.layers["ct Grad-CAM liver"]
    assert layer.data.shape == volume.shape and layer.data.max() > 0
