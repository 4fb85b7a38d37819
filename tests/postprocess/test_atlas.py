"""Registering the shipped MNI brain mask to a scan's tissue probability."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from napari_medseg.postprocess.atlas import _atlas, atlas_region, fit_brain_atlas
from napari_medseg.postprocess.brain_mask import brain_mask
from napari_medseg.io.sitk_images import geometry_from_sitk, image_from_array
from napari_medseg.types import Geometry


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def moved_head():
    """The atlas brain moved by a known similarity transform onto a 2 mm whole-head grid,
    with a thick 'neck' of false-positive tissue joined to it from below."""
    atlas, geometry = _atlas()
    grid = sitk.Image([110, 120, 120], sitk.sitkFloat32)  # x, y, z
    grid.SetSpacing((2.0, 2.0, 2.0))
    grid.SetOrigin((-110.0, -140.0, -150.0))
    truth = sitk.Similarity3DTransform()
    truth.SetCenter((0.0, -18.0, 18.0))
    truth.SetScale(0.92)  # scan to atlas: this brain is 1/0.92 times the atlas
    truth.SetRotation((1.0, 0.0, 0.0), np.deg2rad(12.0))
    truth.SetTranslation((4.0, 9.0, -14.0))
    moved = sitk.Resample(image_from_array(atlas, geometry), grid, truth, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    brain = sitk.GetArrayFromImage(moved) > 0.5
    tissue = brain.astype(np.float32)
    z_low = np.argwhere(brain)[:, 0].min()
    tissue[: z_low + 6, 35:85, 30:80] = 1.0  # neck and face, joined to the brainstem
    return tissue, geometry_from_sitk(grid), brain


def test_fit_recovers_a_moved_brain_despite_the_neck(moved_head):
    tissue, geometry, brain = moved_head
    fit = fit_brain_atlas(tissue, geometry)
    assert fit.accepted, fit.reason
    assert fit.scale == pytest.approx(0.92, abs=0.04)
    assert _dice(fit.probability > 0.5, brain) > 0.93
    region = atlas_region(fit, geometry.spacing, margin_mm=4.0)
    neck = np.zeros_like(brain)
    neck[:10] = True
    assert not (region & neck & (tissue > 0)).any()  # the far neck is outside the region
    assert (brain & ~region).sum() < 0.01 * brain.sum()  # and the brain inside it


def test_whole_head_mask_drops_the_neck_with_the_atlas(moved_head):
    tissue, geometry, brain = moved_head
    probabilities = np.stack([1 - tissue, tissue * 0.3, tissue * 0.3, tissue * 0.4])
    image = tissue + 0.1  # no zero background: a whole-head scan

    def allowed(tissue_probability):
        return atlas_region(fit_brain_atlas(tissue_probability, geometry), geometry.spacing, 4.0)

    mask, stripped = brain_mask(image, probabilities, spacing=geometry.spacing, opening_mm=4.0, allowed_region=allowed)
    plain, _ = brain_mask(image, probabilities, spacing=geometry.spacing)
    assert not stripped
    assert _dice(mask, brain) > 0.95
    assert _dice(plain, brain) < _dice(mask, brain) - 0.05  # without the atlas the neck stays


def test_small_field_of_view_and_empty_tissue_are_rejected():
    geometry = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), ((1, 0, 0), (0, 1, 0), (0, 0, 1)))
    small = fit_brain_atlas(np.ones((40, 200, 200), np.float32), geometry)
    assert not small.accepted and "field of view" in small.reason
    empty = fit_brain_atlas(np.zeros((100, 100, 100), np.float32), geometry)
    assert not empty.accepted and "no tissue" in empty.reason
    with pytest.raises(ValueError, match="rejected"):
        atlas_region(empty, geometry.spacing, 4.0)


def test_rejected_fit_keeps_all_tissue():
    image = np.full((30, 30, 30), 0.5, np.float32)
    probabilities = np.zeros((2, 30, 30, 30), np.float32)
    probabilities[0] = 1.0
    probabilities[:, 5:25, 5:25, 5:25] = np.array([0.0, 1.0])[:, None, None, None]
    mask, _ = brain_mask(image, probabilities, closing_voxels=0, allowed_region=lambda tissue: None)
    assert mask.sum() == 20**3


def test_degenerate_tissue_gives_a_rejected_fit_not_an_error():
    geometry = Geometry((2.0, 2.0, 2.0), (0.0, 0.0, 0.0), ((1, 0, 0), (0, 1, 0), (0, 0, 1)))
    holes = np.where(np.random.default_rng(0).random((60, 60, 60)) > 0.5, np.nan, 1.0).astype(np.float32)
    diverged = fit_brain_atlas(holes, geometry)
    assert not diverged.accepted and "diverged" in diverged.reason
    flat = fit_brain_atlas(np.ones((60, 60, 60), np.float32), geometry)  # tissue everywhere: no shape to fit
    assert not flat.accepted and "correlation" in flat.reason


def test_atlas_distances_are_scipys_without_its_volumes():
    """The core and region thresholds go through refine.distance_threshold: the same voxels as scipy."""
    from scipy import ndimage

    from napari_medseg.postprocess.morphology import distance_threshold

    mask = np.zeros((30, 34, 28), bool)
    mask[5:25, 6:30, 4:22] = True
    mask[12:15, 10:13, 8:11] = False
    spacing = (1.5, 0.9, 1.1)
    for threshold, beyond in ((6.0, True), (4.0, False)):
        expected = ndimage.distance_transform_edt(mask, sampling=spacing)
        expected = expected > threshold if beyond else expected <= threshold
        np.testing.assert_array_equal(distance_threshold(mask, spacing, threshold, beyond=beyond), expected)
