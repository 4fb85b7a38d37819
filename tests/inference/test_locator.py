"""The brain locator: settings, the mask it gives, and its place in segment()."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medseg.config import ModelConfig
from napari_medseg.inference import segment
from napari_medseg.inference.locator import LocatorSettings, locate_brain, locator_of
from napari_medseg.models import build_model, save_bundle
from napari_medseg.types import Geometry, Volume
from napari_medseg.uncertainty.ood_first_use import ood_inspector
from tests.tiny_models import tiny_config


def _locator_config(**changes) -> ModelConfig:
    data = dict(
        architecture="unet", spatial_dims=3, in_channels=1, class_names=("background", "brain"),
        arch_kwargs={"features": [4, 8]}, canonical_orientation="RAS", target_spacing=(4.0, 4.0, 4.0),
        patch_size=(16, 16, 16),
    )  # fmt: skip
    data.update(changes)
    return ModelConfig(**data)


class BrightIsBrain(torch.nn.Module):
    """A one-layer 3D network: brain logit rises with intensity (threshold 0.5)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, 1)
        with torch.no_grad():
            self.conv.weight[:] = torch.tensor([-20.0, 20.0]).view(2, 1, 1, 1, 1)
            self.conv.bias[:] = torch.tensor([10.0, -10.0])
        self.config = _locator_config()

    def forward(self, x):
        return self.conv(x)


def _scene(shape=(64, 64, 64)) -> np.ndarray:
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(np.float32)
    image = np.zeros(shape, np.float32)
    image[(z - 32) ** 2 + (y - 32) ** 2 + (x - 28) ** 2 < 16**2] = 1.0  # the brain
    image[(z - 8) ** 2 + (y - 8) ** 2 + (x - 56) ** 2 < 5**2] = 1.0  # a bright blob elsewhere
    return image


def test_settings_parse_and_name_bad_values():
    assert LocatorSettings.from_config(tiny_config()) is None
    settings = LocatorSettings.from_config_dict({"bundle": "brain-locator", "threshold": 0.4, "margin_mm": 2})
    assert settings == LocatorSettings("brain-locator", 0.4, 2.0)
    with pytest.raises(ValueError, match="threshold 1.5"):
        LocatorSettings.from_config_dict({"bundle": "x", "threshold": 1.5})
    with pytest.raises(ValueError, match="margin_mm -1"):
        LocatorSettings.from_config_dict({"bundle": "x", "margin_mm": -1})
    with pytest.raises(ValueError, match="unknown keys"):
        LocatorSettings.from_config_dict({"bundle": "x", "code": "import os"})
    with pytest.raises(ValueError, match="bundle"):
        LocatorSettings.from_config_dict({"threshold": 0.5})
    with pytest.raises(ValueError, match="extracted_margin_mm 2.0 must be in"):
        LocatorSettings.from_config_dict({"bundle": "x", "margin_mm": 3, "extracted_margin_mm": 2})


def test_locate_brain_keeps_the_largest_piece_grown_by_the_margin():
    image = _scene()
    geometry = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    tight, details = locate_brain(BrightIsBrain(), image, geometry, LocatorSettings("x", 0.5, 0.0))
    grown, _ = locate_brain(BrightIsBrain(), image, geometry, LocatorSettings("x", 0.5, 3.0))
    sphere = _scene() > 0
    sphere[:20, :20, 45:] = False  # the blob is not brain
    assert not tight[:16, :16, 50:].any(), "the small bright blob must be dropped"
    dice = 2 * (tight & sphere).sum() / (tight.sum() + sphere.sum())
    assert dice > 0.85  # a 4 mm grid draws a 16 mm sphere only roughly
    assert (grown >= tight).all() and grown.sum() > tight.sum()
    assert details["brain_ml"] == pytest.approx(16**3 * 4 / 3 * np.pi / 1000, rel=0.2)


def _head(scalp: bool) -> np.ndarray:
    """A bright core (what the locator finds) in a dim rim that a brain extraction kept
    (like cortex and CSF below the locator's threshold), zeros around; with ``scalp`` a
    dim shell farther out, as a whole head has."""
    z, y, x = np.mgrid[:64, :64, :64].astype(np.float32)
    radius = np.sqrt((z - 32) ** 2 + (y - 32) ** 2 + (x - 32) ** 2)
    image = np.where(radius < 15, 1.0, np.where(radius < 19, 0.3, 0.0)).astype(np.float32)
    if scalp:
        image[(radius >= 24) & (radius < 28)] = 0.3
    image[(z - 6) ** 2 + (y - 6) ** 2 + (x - 6) ** 2 < 4**2] = 0.3  # something far from the brain
    return image


def test_a_brain_extracted_scan_keeps_what_the_extraction_kept_near_the_brain():
    geometry = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    settings = LocatorSettings("x", 0.5, 3.0, 10.0)
    image = _head(scalp=False)
    mask, details = locate_brain(BrightIsBrain(), image, geometry, settings)
    assert details["brain_extracted"] is True
    corner = np.zeros(image.shape, bool)
    corner[:12, :12, :12] = True
    assert mask[(image > 0) & ~corner].all(), "every non-zero voxel near the brain is in the mask"
    assert not mask[corner].any(), "what the extraction kept far from the brain stays out"
    assert details["mask_ml"] > details["brain_ml"]

    head = _head(scalp=True)
    mask, details = locate_brain(BrightIsBrain(), head, geometry, settings)
    assert details["brain_extracted"] is False
    assert not mask[head == 0.3].all() and not mask[(head == 0.3) & (image == 0)].any(), "no scalp in the mask"


def test_the_brain_extraction_test_needs_zeros_and_little_outside_the_brain():
    from napari_medseg.inference.locator import looks_brain_extracted

    image = _head(scalp=False)
    brain = image > 0.2
    assert looks_brain_extracted(image, brain, slab=5)
    assert not looks_brain_extracted(image + 0.01, brain), "no exact zeros: not extracted"
    assert not looks_brain_extracted(_head(scalp=True), brain), "a scalp outside the brain: not extracted"
    assert not looks_brain_extracted(image, np.zeros_like(brain))


def test_segment_labels_nothing_outside_the_located_brain(tmp_path):
    torch.manual_seed(0)
    locator = build_model(_locator_config()).eval()
    locator_path = save_bundle(locator, tmp_path / "locator", meta={"description": "test locator"})
    config = tiny_config()
    data = config.to_dict()
    data["extra"]["locator"] = {"bundle": str(locator_path), "threshold": 0.5, "margin_mm": 2.0}
    data["extra"]["expected_volume_ml"] = {name: [0.0, 1e6] for name in data["class_names"][1:]}
    model = build_model(ModelConfig.from_dict(data)).eval()
    volume = Volume(_scene((40, 40, 40)) * 100, Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))

    found = {}
    inspect = ood_inspector(model, volume, lambda ood: found.update(ood=ood))
    result = segment(volume, model, device="cpu", postprocessing=False, inspect=inspect)
    applied = result.postprocess["applied"]["locator"]
    assert applied["margin_mm"] == 2.0 and applied["spacing_mm"] == [4.0, 4.0, 4.0]
    # the same mask computed directly: nothing outside it is labelled
    from napari_medseg.preprocess import prepare

    prepared = prepare(volume, orientation="RAS", spacing=(1.0, 1.0, 1.0))
    mask, _ = locate_brain(locator_of(model), prepared.image, prepared.geometry, LocatorSettings.from_config(model.config))
    outside = prepared.reorientation.invert(~mask[None], channel_axis=0)[0]
    assert (result.labels[outside] == 0).all()
    # the OOD brain-volume test reads the labels users see, not the network's tissue outside the brain
    brain_ml = found["ood"].as_dict()["signals"]["brain_volume"]["value"]
    assert brain_ml == pytest.approx(np.count_nonzero(result.labels) / 1000, abs=0.01)
    # the locator is held beside the model, never inside its parameters or state
    assert not any(key.startswith("_medseg") for key in model.state_dict())
    assert locator_of(model) is locator_of(model)

    # an uncertainty run reports the same findings as the segmentation it describes
    from napari_medseg.uncertainty import estimate_uncertainty

    estimate = estimate_uncertainty(volume, model, method="mc-dropout", samples=2, device="cpu", postprocessing=False)
    reported = estimate.report()["locator"]
    assert reported["bundle"] == str(locator_path)
    for key in ("brain_ml", "mask_ml", "brain_extracted", "margin_mm"):
        assert reported[key] == applied[key], key
    assert (estimate.labels[outside] == 0).all()


def test_a_locator_that_is_not_a_3d_brain_model_is_refused_by_name(tmp_path):
    torch.manual_seed(0)
    wrong = save_bundle(build_model(tiny_config()).eval(), tmp_path / "not-a-locator", meta={})  # 2D, 4 classes
    data = tiny_config().to_dict()
    data["extra"]["locator"] = {"bundle": str(wrong)}
    model = build_model(ModelConfig.from_dict(data))
    with pytest.raises(ValueError, match="must be a 3D model with 1 input channel and 2 classes"):
        locator_of(model)
    data["extra"]["locator"] = {"bundle": str(tmp_path / "missing")}
    from napari_medseg.models import BundleError

    with pytest.raises(BundleError):
        locator_of(build_model(ModelConfig.from_dict(data)))


@pytest.mark.parametrize("slab", [1, 5, 64])
@pytest.mark.parametrize("spacing, margin", [((1.7, 0.8, 1.1), 3.5), ((1.0, 1.0, 1.0), 3.0), ((1.0, 1.0, 1.0), 10.0)])
def test_growing_by_slabs_is_one_distance_transform_of_the_box(slab, spacing, margin):
    """SimpleITK's transform, slab by slab, against scipy's over the whole box: the same
    voxels, including those exactly at the margin (3 mm is (2, 2, 1) voxels away at 1 mm;
    whole-voxel distances are exact in float32, see ``morphology.near``)."""
    from scipy import ndimage

    from napari_medseg.inference.locator import _grow

    rng = np.random.default_rng(slab)
    mask = ndimage.binary_opening(rng.random((30, 26, 22)) > 0.7)
    expected = ndimage.distance_transform_edt(~mask, sampling=spacing) <= margin
    np.testing.assert_array_equal(_grow(mask, margin, spacing, slab=slab), expected)


@pytest.mark.parametrize("depth, spacing", [(70, (1.0, 1.2, 0.9)), (9, (1.0, 1.0, 1.0)), (40, (4.0, 1.0, 1.0))])
def test_the_coarse_image_smoothed_by_slabs_is_the_whole_volume_filter_exactly(depth, spacing):
    """Slab by slab with the kernel's radius around each slab, pasted into SimpleITK's
    image: bit for bit what one ``gaussian_filter`` over the volume then resampling gave
    (depth below, at and above the slab, and no smoothing along z)."""
    import SimpleITK as sitk
    from scipy import ndimage

    from napari_medseg.inference.locator import _coarse_image, _smoothed_image
    from napari_medseg.preprocess.intensity import normalize_intensity
    from napari_medseg.preprocess.pipeline import resample_array

    image = np.random.default_rng(depth).normal(size=(depth, 23, 19)).astype(np.float32)
    geometry, coarse = Geometry(spacing, (3.3, -7.1, 2.9)), Geometry((4.0, 4.0, 4.0), (3.3, -7.1, 2.9))
    sigma = [max(0.0, (c / s) / 2.355) for c, s in zip(coarse.spacing, spacing)]
    whole = ndimage.gaussian_filter(image, sigma)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(_smoothed_image(image, sigma, geometry, slab=4)), whole)
    shape = tuple(max(1, int(round(n * s / 4.0))) for n, s in zip(image.shape, spacing))
    expected = normalize_intensity(resample_array(whole, geometry, coarse, shape, linear=True))
    np.testing.assert_array_equal(_coarse_image(image, geometry, coarse, shape), expected)


def test_the_extent_of_a_mask_is_that_of_its_voxels():
    from napari_medseg.inference.locator import _extent

    mask = np.zeros((9, 8, 7), bool)
    mask[2, 5, 1] = mask[6, 3, 4] = True
    assert _extent(mask) == [(2, 6), (3, 5), (1, 4)]
