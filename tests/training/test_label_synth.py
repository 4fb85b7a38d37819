"""Synthesis from label maps: shapes, targets, reproducibility, mirrored sides."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medseg.training.label_maps import STRUCTURES, LabelMap
from napari_medseg.training.label_synth import LabelSynthesizer, SynthSettings


def _head(size: int = 48, csf_outer: float = 18) -> LabelMap:
    """A toy head: left/right white matter and cortex inside CSF inside soft tissue."""
    z, y, x = np.mgrid[:size, :size, :size] - (size - 1) / 2
    radius = np.sqrt(z**2 + y**2 + x**2)
    ids = np.zeros((size,) * 3, np.int32)
    ids[radius < csf_outer + 4] = 507
    ids[radius < csf_outer] = 24
    ids[radius < 16] = np.where(x[radius < 16] < 0, 3, 42)
    ids[radius < 11] = np.where(x[radius < 11] < 0, 2, 41)
    values, generation = np.unique(ids, return_inverse=True)
    index = {s[0]: i for i, s in enumerate(STRUCTURES)}
    structures = np.vectorize(lambda v: index.get(v, 0))(ids).astype(np.uint8)
    return LabelMap(generation.reshape(ids.shape).astype(np.uint8), structures, tuple(values.tolist()), "toy")


@pytest.mark.parametrize("target, classes", [("tissue", 4), ("structures", 33), ("brain", 2)])
def test_slabs_have_the_promised_shapes_and_targets(target, classes):
    synth = LabelSynthesizer([_head()], SynthSettings(elastic_mm=1.0), seed=0)
    image, labels = synth.slabs(3, patch=(40, 36), offsets_mm=(-2.0, 0.0, 2.0), target=target)
    assert image.shape == (3, 3, 40, 36) and image.dtype == torch.float32
    assert labels.shape == (3, 40, 36) and labels.dtype == torch.int64
    assert torch.isfinite(image).all() and image.min() >= 0
    assert 0 <= int(labels.min()) and int(labels.max()) < classes
    assert (labels > 0).any()


def test_volumes_are_coarse_whole_heads_with_a_brain_target():
    synth = LabelSynthesizer([_head()], seed=1)
    image, labels = synth.volumes(2, shape=(12, 12, 12), spacing_mm=4.0)
    assert image.shape == (2, 1, 12, 12, 12) and labels.shape == (2, 12, 12, 12)
    brain_fraction = labels.float().mean().item()
    # brain (r < 18 mm of a 48 mm cube seen through a 48 mm box) is a fair share, not all
    assert 0.05 < brain_fraction < 0.6


def test_same_seed_same_batch_other_seed_other_batch():
    first = LabelSynthesizer([_head()], seed=3).slabs(2, patch=(32, 32), offsets_mm=(0.0,))
    again = LabelSynthesizer([_head()], seed=3).slabs(2, patch=(32, 32), offsets_mm=(0.0,))
    other = LabelSynthesizer([_head()], seed=4).slabs(2, patch=(32, 32), offsets_mm=(0.0,))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


def test_mirrored_samples_swap_left_and_right_structures():
    """Whatever the pose, left cortex stays on the image's left (lower x) in the target."""
    index = {s[0]: i for i, s in enumerate(STRUCTURES)}
    settings = SynthSettings(rotate_deg=(0.0, 0.0, 0.0), elastic_mm=0.0, shift_mm=0.0, scale=(1.0, 1.0), p_brain_centre=0.0)
    synth = LabelSynthesizer([_head()], settings, seed=5)
    _, labels = synth.slabs(16, patch=(40, 40), offsets_mm=(0.0,), target="structures")
    columns = torch.arange(40, dtype=torch.float32)
    for sample in labels:
        left, right = sample == index[3], sample == index[42]
        if left.any() and right.any():
            assert columns[left.nonzero()[:, 1]].mean() < columns[right.nonzero()[:, 1]].mean()


def test_unknown_target_is_refused():
    with pytest.raises(ValueError, match="target"):
        LabelSynthesizer([_head()]).slabs(1, target="lesions")
    with pytest.raises(ValueError, match="no label maps"):
        LabelSynthesizer([])


def test_what_is_cut_from_the_image_is_background_in_the_target():
    settings = SynthSettings(p_skull_strip=0.0, p_field_of_view_cut=1.0, max_noise=0.0, bias_strength=0.0)
    synth = LabelSynthesizer([_head()], settings, seed=6)
    image, labels = synth.slabs(8, patch=(40, 40), offsets_mm=(0.0,), target="tissue")
    # every sample lost a band of at least 8 columns or rows; no tissue is labelled there
    for sample, target in zip(image[:, 0], labels):
        empty_rows = (sample == 0).all(dim=1)
        empty_cols = (sample == 0).all(dim=0)
        assert empty_rows.sum() >= 8 or empty_cols.sum() >= 8
        assert (target[empty_rows] == 0).all() and (target[:, empty_cols] == 0).all()



def test_some_extractions_cut_at_the_pial_surface():
    """Stripped at the pial surface, the outer CSF shell is gone and cortex is the outer layer;
    the same draws stripped around the CSF keep it."""
    index = {s[0]: i for i, s in enumerate(STRUCTURES)}

    def outer_csf_and_cortex(pial: float):
        settings = SynthSettings(p_skull_strip=1.0, p_strip_at_pial_surface=pial, p_field_of_view_cut=0.0,
                                 rotate_deg=(0.0, 0.0, 0.0), elastic_mm=0.0, p_brain_centre=1.0)  # fmt: skip
        synth = LabelSynthesizer([_head(56, csf_outer=22)], settings, seed=8)
        _, labels = synth.slabs(6, patch=(48, 48), offsets_mm=(0.0,), target="structures")
        return int((labels == index[24]).sum()), int((labels == index[3]).sum())

    pial_csf, pial_cortex = outer_csf_and_cortex(1.0)
    kept_csf, kept_cortex = outer_csf_and_cortex(0.0)
    assert 0 < pial_cortex <= kept_cortex
    assert pial_csf < 0.5 * kept_csf


def test_structure_centred_samples_find_small_structures():
    """A 3 mm ball of left hippocampus 13 mm off centre: never in a small patch at the
    head's centre, but in a fair share of samples centred on a structure drawn uniformly."""
    head = _head()
    z, y, x = np.mgrid[:48, :48, :48] - 23.5
    ball = np.sqrt(z**2 + y**2 + (x + 13) ** 2) < 3
    index = {s[0]: i for i, s in enumerate(STRUCTURES)}
    structures = head.structures.copy()
    structures[ball] = index[17]
    head = LabelMap(head.generation, structures, head.label_ids, "toy with hippocampus")
    still = dict(rotate_deg=(0.0, 0.0, 0.0), elastic_mm=0.0, shift_mm=0.0, scale=(1.0, 1.0), p_brain_centre=0.0)
    counts = []
    for share in (0.0, 1.0):
        synth = LabelSynthesizer([head], SynthSettings(**still, p_structure_centre=share), seed=2)
        _, labels = synth.slabs(48, patch=(8, 8), offsets_mm=(0.0,), target="structures")
        hippocampus = (labels == index[17]) | (labels == index[53])  # either side: some are mirrored
        counts.append(int(hippocampus.flatten(1).any(dim=1).sum()))
    assert counts[0] == 0 and counts[1] >= 3, counts


@pytest.mark.parametrize("size", [(3, 7, 7), (5, 5, 5), (1, 3, 1)])
def test_box_max_is_the_full_box_max_pool(size):
    from napari_medseg.training.label_synth import _box_max

    x = torch.rand((2, 1, 5, 23, 19), generator=torch.Generator().manual_seed(1))
    expected = torch.nn.functional.max_pool3d(x, size, 1, tuple(s // 2 for s in size))
    assert torch.equal(_box_max(x, size), expected)
    assert torch.equal(-_box_max(-x, size), -torch.nn.functional.max_pool3d(-x, size, 1, tuple(s // 2 for s in size)))
