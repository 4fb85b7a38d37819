"""Post-processing: largest component and per-scan EM refinement."""

from __future__ import annotations

import numpy as np

from napari_medseg.inference.refine import em_refine, largest_component


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
    from napari_medseg.inference.refine import brain_mask

    image = np.zeros((20, 20, 20), np.float32)
    image[4:16, 4:16, 4:16] = 1.0
    probabilities = np.zeros((4, 20, 20, 20), np.float32)
    probabilities[0] = 1.0
    probabilities[:, 4:15, 4:15, 4:15] = [[[[0.0]]], [[[0.2]]], [[[0.3]]], [[[0.5]]]]  # network misses one face
    mask, stripped = brain_mask(image, probabilities)
    assert stripped and mask.sum() == 12**3


def test_full_head_scan_uses_closed_network_mask():
    from napari_medseg.inference.refine import brain_mask

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
    from napari_medseg.inference.refine import opening

    mask = np.zeros((40, 40, 60), bool)
    mask[5:35, 5:35, 5:35] = True  # the brain
    mask[18:21, 18:21, 35:45] = True  # a 3-voxel bridge ...
    mask[12:28, 12:28, 45:58] = True  # ... to a blob of non-brain
    opened = opening(mask, 3.0, (1.0, 1.0, 1.0))
    assert opened[20, 20, 20] and not opened[20, 20, 50] and not opened[19, 19, 40]
    assert opened[5:35, 5:35, 5:35].mean() > 0.97  # the brain keeps its corners mostly
    assert (opening(mask, 0.0, (1.0, 1.0, 1.0)) == mask).all()


def test_a_confident_network_overrides_the_mixture_inside_the_mask_only():
    from napari_medseg.inference.refine import network_override

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
