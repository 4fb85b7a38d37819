"""Post-processing: largest component and per-scan EM refinement."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.postprocess.mixture import em_refine, every_nth_index
from napari_medseg.postprocess.morphology import distance_threshold, foreground_mask, largest_component, near, opening


def test_largest_component_drops_islands_and_fills_holes():
    mask = np.zeros((10, 10, 10), bool)
    mask[1:7, 1:7, 1:7] = True
    mask[3, 3, 3] = False  # a hole
    mask[9, 9, 9] = True  # an island
    kept = largest_component(mask)
    assert kept[3, 3, 3] and not kept[9, 9, 9] and kept.sum() == 216


def test_em_recovers_tissue_classes_from_a_vague_prior():
    rng = np.random.default_rng(0)
    truth = rng.integers(1, 4, size=(20, 20, 20))
    means = {1: 0.3, 2: 0.6, 3: 0.9}
    image = np.vectorize(means.get)(truth).astype(np.float32) + rng.normal(0, 0.05, truth.shape).astype(np.float32)
    probabilities = np.zeros((4, 20, 20, 20), np.float32)
    probabilities[0] = 0.05
    probabilities[1:] = 0.95 / 3  # the network cannot tell the tissues apart
    for k in range(1, 4):  # ... only a slight hint towards the truth
        probabilities[k][truth == k] += 0.15
    probabilities /= probabilities.sum(axis=0, keepdims=True)
    refined = em_refine(image, probabilities, np.ones(truth.shape, bool))
    np.testing.assert_allclose(refined.sum(axis=0), 1.0, atol=1e-5)
    accuracy = (refined.argmax(axis=0) == truth).mean()
    assert accuracy > 0.99


def test_em_outside_mask_is_background():
    probabilities = np.full((4, 4, 4, 4), 0.25, np.float32)
    mask = np.zeros((4, 4, 4), bool)
    mask[:2] = True
    refined = em_refine(np.random.default_rng(0).random((4, 4, 4)).astype(np.float32), probabilities, mask)
    assert (refined[0][~mask] == 1).all() and (refined[1:, ~mask] == 0).all()


def test_brain_extracted_scan_uses_its_nonzero_region():
    from napari_medseg.postprocess.brain_mask import brain_mask

    image = np.zeros((20, 20, 20), np.float32)
    image[4:16, 4:16, 4:16] = 1.0
    probabilities = np.zeros((4, 20, 20, 20), np.float32)
    probabilities[0] = 1.0
    probabilities[:, 4:15, 4:15, 4:15] = [[[[0.0]]], [[[0.2]]], [[[0.3]]], [[[0.5]]]]  # network misses one face
    mask, stripped = brain_mask(image, probabilities)
    assert stripped and mask.sum() == 12**3


def test_full_head_scan_uses_closed_network_mask():
    from napari_medseg.postprocess.brain_mask import brain_mask

    image = np.random.default_rng(0).random((24, 24, 24)).astype(np.float32) + 0.1  # no zero background
    probabilities = np.zeros((4, 24, 24, 24), np.float32)
    probabilities[0] = 1.0
    inside = np.zeros((24, 24, 24), bool)
    inside[6:18, 6:18, 6:18] = True
    inside[6:9, 11:13, 11:13] = False  # a sulcus-like notch at the surface
    probabilities[0][inside] = 0.0
    probabilities[3][inside] = 1.0
    mask, stripped = brain_mask(image, probabilities, closing_voxels=2)
    assert not stripped
    assert mask[7, 12, 12] and mask.sum() >= inside.sum()


def test_opening_cuts_a_thin_bridge_and_what_it_leads_to():
    from napari_medseg.postprocess.morphology import opening

    mask = np.zeros((40, 40, 60), bool)
    mask[5:35, 5:35, 5:35] = True  # the brain
    mask[18:21, 18:21, 35:45] = True  # a 3-voxel bridge ...
    mask[12:28, 12:28, 45:58] = True  # ... to a blob of non-brain
    opened = opening(mask, 3.0, (1.0, 1.0, 1.0))
    assert opened[20, 20, 20] and not opened[20, 20, 50] and not opened[19, 19, 40]
    assert opened[5:35, 5:35, 5:35].mean() > 0.97  # the brain keeps its corners mostly
    assert (opening(mask, 0.0, (1.0, 1.0, 1.0)) == mask).all()


def test_a_confident_network_overrides_the_mixture_inside_the_mask_only():
    from napari_medseg.postprocess.mixture import network_override

    post = np.zeros((4, 1, 4), np.float32)
    post[1] = 1.0  # the mixture says CSF everywhere (background 0 inside the mask)
    network = np.full((4, 1, 4), 0.02, np.float32)
    network[3, 0, :] = [0.94, 0.94, 0.6, 0.94]  # white matter: confident, confident, unsure, confident
    network[1, 0, 2] = 0.34
    mask = np.array([[True, True, True, False]])
    out = network_override(post, network, mask, 0.9)
    assert np.argmax(out, axis=0).tolist() == [[3, 3, 1, 1]]  # not where unsure, not outside the mask
    np.testing.assert_array_equal(out[:, 0, 0], network[:, 0, 0])
    assert np.argmax(post, axis=0).tolist() == [[1, 1, 1, 1]]  # the input is left alone


# --- memory: the same results with slab-sized working arrays -------------------------


def _blobs(shape=(23, 19, 17), seed=0) -> np.ndarray:
    """A random bool (z, y, x) mask of smooth blobs (thin bridges, holes, islands)."""
    from scipy import ndimage

    noise = np.random.default_rng(seed).random(shape)
    return ndimage.gaussian_filter(noise, 1.5) > 0.5


@pytest.mark.parametrize("slab", [1, 4, 100])
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.7, 0.9)])
def test_distance_threshold_is_scipys_comparison_bit_for_bit(slab, spacing):
    from scipy import ndimage

    for seed, mask in enumerate([_blobs(seed=1), ~_blobs(seed=2), np.ones((5, 6, 7), bool), np.zeros((5, 6, 7), bool)]):
        distances = ndimage.distance_transform_edt(mask, sampling=spacing)
        for threshold in (0.5, 1.0, 2.1, 5.0):
            beyond = distance_threshold(mask, spacing, threshold, beyond=True, slab=slab)
            within = distance_threshold(mask, spacing, threshold, beyond=False, slab=slab)
            np.testing.assert_array_equal(beyond, distances > threshold, err_msg=f"mask {seed}")
            np.testing.assert_array_equal(within, distances <= threshold, err_msg=f"mask {seed}")


@pytest.mark.parametrize("spacing, margin", [((1.0, 1.0, 1.0), 2.0), ((1.5, 1.0, 1.0), 3.0), ((1.7, 0.8, 1.1), 3.5)])
def test_near_is_the_distance_threshold_of_the_outside(spacing, margin):
    for seed in range(3):
        mask = _blobs(seed=seed)
        np.testing.assert_array_equal(near(mask, spacing, margin), distance_threshold(~mask, spacing, margin, beyond=False))


def test_opening_is_unchanged_by_the_slabbed_distances():
    from scipy import ndimage

    def reference(mask, radius_mm, spacing):  # the whole-volume code it replaces
        core = ndimage.distance_transform_edt(mask, sampling=spacing) > radius_mm
        if not core.any():
            return mask
        core = largest_component(core)
        grown = ndimage.distance_transform_edt(~core, sampling=spacing) <= radius_mm + max(spacing)
        return largest_component(mask & grown)

    for seed in range(3):
        mask = _blobs((30, 26, 22), seed)
        for radius, spacing in ((1.5, (1.0, 1.0, 1.0)), (2.0, (1.8, 0.8, 0.9))):
            np.testing.assert_array_equal(opening(mask, radius, spacing), reference(mask, radius, spacing))


def test_distance_threshold_holds_the_feature_transform_not_scipys_float64_volumes():
    import tracemalloc

    mask = _blobs((64, 64, 64))
    tracemalloc.start()
    try:
        distance_threshold(mask, (1.0, 0.8, 0.8), 3.0, beyond=True, slab=4)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # int8 input + int32 (3, ...) features + the bool result + slabs: about 14 bytes a
    # voxel; scipy's distances alone take about 48 at once.
    assert peak < 20 * mask.size, f"peak {peak / mask.size:.1f} bytes per voxel"


def test_foreground_mask_is_argmax_above_background_ties_included():
    rng = np.random.default_rng(4)
    p = rng.integers(0, 3, (4, 9, 5, 6)).astype(np.float32)  # many ties, background first wins
    for slab in (1, 4, 16):
        np.testing.assert_array_equal(foreground_mask(p, slab=slab), np.argmax(p, axis=0) > 0)


@pytest.mark.parametrize("max_voxels", [1, 7, 50, 10**6])
def test_every_nth_index_is_a_strided_flatnonzero(max_voxels):
    mask = _blobs((13, 11, 9), seed=5)
    index = np.flatnonzero(mask)
    expected = index[:: max(1, -(-index.size // max_voxels))]
    for slab in (1, 3, 16):
        got = every_nth_index(mask, max_voxels, slab=slab)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
    assert every_nth_index(np.zeros((3, 4, 5), bool), 10).size == 0


def test_fill_holes_by_labelling_is_scipys():
    from scipy import ndimage

    from napari_medseg.postprocess.morphology import fill_holes

    rng = np.random.default_rng(3)
    for shape in [(9, 14, 11), (20, 7, 16), (1, 12, 12)]:
        mask = ndimage.binary_opening(rng.random(shape) > 0.45)
        np.testing.assert_array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))


def test_grouped_mixture_moves_tissue_boundaries_and_leaves_structures_to_the_network():
    rng = np.random.default_rng(1)
    tissue = rng.integers(1, 3, size=(16, 16, 16))  # 1 dark, 2 bright
    image = np.where(tissue == 1, 0.3, 0.8).astype(np.float32) + rng.normal(0, 0.04, tissue.shape).astype(np.float32)
    left = np.arange(16)[None, None, :] < 8  # the dark tissue's two structures: left and right
    probabilities = np.full((4, 16, 16, 16), 0.02, np.float32)
    probabilities[1] = np.where((tissue == 1) & left, 0.5, 0.15)  # class 1: dark, left
    probabilities[2] = np.where((tissue == 1) & ~left, 0.5, 0.15)  # class 2: dark, right
    probabilities[3] = 0.3  # class 3: bright; the network cannot tell bright from dark
    probabilities /= probabilities.sum(axis=0, keepdims=True)
    groups = np.array([0, 1, 1, 2])
    refined = em_refine(image, probabilities, np.ones(tissue.shape, bool), groups=groups)
    np.testing.assert_allclose(refined.sum(axis=0), 1.0, atol=1e-5)
    labels = refined.argmax(axis=0)
    assert ((labels == 3) == (tissue == 2)).mean() > 0.99  # the intensities decide the tissue
    dark = tissue == 1
    assert (labels[dark & left] == 1).all() and (labels[dark & ~left] == 2).all()  # the network the side
    shared = refined[2] > 1e-6  # within a group, the network's proportions
    np.testing.assert_allclose(refined[1][shared] / refined[2][shared], (probabilities[1] / probabilities[2])[shared], rtol=1e-4)


def test_grouped_mixture_splits_a_group_equally_where_the_network_gives_it_nothing():
    from napari_medseg.postprocess.mixture import TissueMixture, apply_mixture

    mixture = TissueMixture(np.array([0.2, 0.8]), np.array([0.01, 0.01]), np.array([0.5, 0.5]), 0.0, 1e-3)
    probabilities = np.zeros((4, 1, 1, 2), np.float32)
    probabilities[3] = 1.0  # all on the bright group's only class
    image = np.array([[[0.2, 0.8]]], np.float32)  # the first voxel is dark
    out = apply_mixture(mixture, image, probabilities, np.ones((1, 1, 2), bool), np.array([0, 1, 1, 2]))
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-6)
    assert out[1, 0, 0, 0] == pytest.approx(out[2, 0, 0, 0]) and out[1, 0, 0, 0] > 0.49
    assert out[3, 0, 0, 1] > 0.99


def test_keep_background_leaves_the_networks_background_inside_the_brain_mask():
    from napari_medseg.postprocess import PostprocessSettings
    from napari_medseg.postprocess.fit import postprocess
    from napari_medseg.types import Geometry

    rng = np.random.default_rng(2)
    image = rng.choice([0.3, 0.8], size=(12, 12, 12)).astype(np.float32)
    probabilities = np.zeros((4, 12, 12, 12), np.float32)
    probabilities[1:3] = 0.5  # tissue 1 or 2, the network cannot tell which ...
    probabilities[:, :, :, :3] = [[[[0.9]]], [[[0.05]]], [[[0.05]]], [[[0.0]]]]  # ... background on one side
    brain = np.ones(image.shape, bool)  # a locator mask that covers everything
    geometry = Geometry(spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    for keep, background in ((True, 12 * 12 * 3), (False, 0)):
        settings = PostprocessSettings.from_dict({"em_refine": {"prior_weight": 1.0, "keep_background": keep}})
        labels = postprocess(image, probabilities, settings, geometry=geometry, brain=brain).argmax(axis=0)
        assert (labels == 0).sum() == background
        bright, tissue = image[:, :, 3:] > 0.5, labels[:, :, 3:]
        assert len(np.unique(tissue[bright])) == len(np.unique(tissue[~bright])) == 1  # the intensities decide
        assert tissue[bright][0] != tissue[~bright][0] and tissue.min() > 0


def test_a_network_prior_keeps_a_small_class_that_fitted_proportions_would_shrink():
    from napari_medseg.postprocess.mixture import TissueMixture, apply_mixture, fit_mixture

    rng = np.random.default_rng(4)
    small = rng.random((24, 24, 24)) < 0.05  # a small nucleus whose intensity overlaps its neighbour's
    image = np.where(small, 0.45, 0.3).astype(np.float32) + rng.normal(0, 0.07, small.shape).astype(np.float32)
    probabilities = np.zeros((3, *small.shape), np.float32)
    probabilities[1] = np.where(small, 0.15, 0.95)  # the network finds it, with some doubt
    probabilities[2] = 1 - probabilities[1]
    inside = np.ones(small.shape, bool)
    mixture = fit_mixture(image, probabilities, inside, prior_weight=1.0)
    np.testing.assert_allclose(mixture.mixing, 0.5)
    kept = (apply_mixture(mixture, image, probabilities, inside).argmax(axis=0) == 2).sum()
    proportions = np.array([0.95, 0.05])  # what a fitted global proportion would weigh in with
    shrunk = TissueMixture(mixture.means, mixture.variances, proportions, 1.0, mixture.min_prior)
    lost = (apply_mixture(shrunk, image, probabilities, inside).argmax(axis=0) == 2).sum()
    assert abs(kept - small.sum()) < 0.25 * small.sum()  # 839 of 704 here
    assert lost < 0.8 * small.sum()  # 523
