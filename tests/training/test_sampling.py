"""Sparse labels onto the model grid, windows around strokes, augmentation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from napari_medseg.preprocess import prepare
from napari_medseg.training.sampling import (
    Batch,
    PatchSampler,
    augment_batch,
    check_sparse_labels,
    default_patch,
    flip_dim,
    prepare_case,
)
from napari_medseg.types import Geometry, Volume
from tests.tiny_models import tiny_config
from tests.training import single_thread, strokes, toy_volume  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")


def _with_margin(config, margin_mm: float = 32):
    """``config`` of a 2D model that asks for air around each slice."""
    return dataclasses.replace(config, extra={**config.extra, "slice_margin_mm": margin_mm})


def test_labels_follow_the_image_onto_the_model_grid():
    volume, truth = toy_volume()
    config = _with_margin(tiny_config())  # RAS: the identity (LPS) grid is flipped along y and x
    case = prepare_case(volume, strokes(truth), config)
    image = prepare(volume, orientation="RAS", spacing=(1.0, 1.0, 1.0)).image
    # a 2D model's grid has air around the slices; the scan sits inside it unchanged
    assert case.image.shape[1] > image.shape[1] and torch.equal(case.image[case.scan], torch.from_numpy(image))
    assert case.scan_shape == image.shape
    labels = case.labels.numpy()
    outside = np.ones(labels.shape, bool)
    outside[case.scan] = False
    assert not labels[outside].any()  # nobody painted the air
    labels = labels[case.scan]
    # every stroke sits on voxels of its own intensity class after the flips
    assert labels.any() and np.all(image[labels == 2] < 0.6) and np.all(image[labels == 4] > 0.6)
    np.testing.assert_array_equal(labels, strokes(truth)[:, ::-1, ::-1])
    assert case.counts.tolist() == np.bincount(strokes(truth).ravel(), minlength=5)[1:].tolist()


def test_labels_are_resampled_by_nearest_neighbour_when_spacing_differs():
    volume, truth = toy_volume()
    coarse = Volume(volume.array[::2], Geometry((2.0, 1.0, 1.0), (0.0, 0.0, 0.0)), modality="MR")
    sparse = (truth[::2] + 1).astype(np.uint8)  # dense on the coarse grid
    case = prepare_case(coarse, sparse, tiny_config())
    labels = case.labels.numpy()[case.scan]
    assert case.labels.shape == case.image.shape and tuple(labels.shape) == (8, 32, 32)
    assert set(np.unique(labels[:7])) == {1, 2, 4}  # nearest neighbour: no blended values
    assert not labels[7].any()  # past the last coarse slice: not annotated, not background


def test_sparse_label_checks_name_the_problem():
    with pytest.raises(ValueError, match="new_classes"):
        check_sparse_labels(np.full((2, 3, 4), 6), (2, 3, 4), 4)
    with pytest.raises(ValueError, match=">= 0"):
        check_sparse_labels(np.full((2, 3, 4), -1), (2, 3, 4), 4)
    with pytest.raises(ValueError, match="shape"):
        check_sparse_labels(np.zeros((2, 3, 5)), (2, 3, 4), 4)
    with pytest.raises(ValueError, match="whole numbers"):
        check_sparse_labels(np.full((2, 3, 4), 0.5), (2, 3, 4), 4)
    assert check_sparse_labels(np.ones((2, 3, 4, 1), np.float32), (2, 3, 4), 4).dtype == np.uint8


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_windows_contain_strokes_and_mark_padding(spatial_dims):
    volume, truth = toy_volume()
    config = tiny_config(spatial_dims=spatial_dims)
    case = prepare_case(volume, strokes(truth, slices=(3,)), config)
    ny = case.labels.shape[1]  # the grid's y size (with the air a 2D model gets around the scan)
    patch = (ny + 8, 24) if spatial_dims == 2 else (6, ny + 8, 24)  # y larger than the grid: padding
    assert default_patch(config, [case.scan_shape]) == ((32, 32) if spatial_dims == 2 else (8, 16, 16))
    channels = 3 if spatial_dims == 2 else 1
    sampler = PatchSampler([case], spatial_dims=spatial_dims, patch=patch, offsets=(-2, 0, 2), context_fraction=0.0, seed=1)
    batch = sampler.sample(6)
    assert batch.image.shape == (6, channels, *patch) and batch.target.shape == (6, *patch)
    assert batch.annotated.flatten(1).any(1).all()  # every window holds a stroke
    y_axis = -2
    assert not batch.valid.narrow(y_axis, ny, 8).any() and batch.valid.narrow(y_axis, 0, ny).all()
    assert not batch.annotated[~batch.valid].any() and (batch.image[:, 0][~batch.valid] == 0).all()
    classes = set(batch.target[batch.annotated].tolist())
    assert classes <= {0, 1, 3}
    context = PatchSampler([case], spatial_dims=spatial_dims, patch=patch, offsets=(-2, 0, 2), context_fraction=1.0, seed=1)
    assert context.sample(8).image.shape[0] == 8


def test_2d_inputs_are_context_stacks_of_the_slice():
    volume, truth = toy_volume()
    case = prepare_case(volume, strokes(truth, slices=(0,)), tiny_config())
    whole_slice = tuple(case.image.shape[1:])
    sampler = PatchSampler([case], spatial_dims=2, patch=whole_slice, offsets=(-2, 0, 2), context_fraction=0.0)
    batch = sampler.sample(1)
    assert torch.equal(batch.image[0, 1], case.image[0]) and torch.equal(batch.image[0, 2], case.image[2])
    assert (batch.image[0, 0] == 0).all()  # slice -2 is outside the volume


def test_augmentation_leaves_its_input_alone_and_flips_images_with_labels():
    volume, truth = toy_volume()
    config = tiny_config()
    assert flip_dim(config) == 1  # RAS: x (left-right) is the last in-plane axis
    assert flip_dim(tiny_config(spatial_dims=3)) == 2
    case = prepare_case(volume, strokes(truth), config)
    batch = PatchSampler([case], spatial_dims=2, patch=(32, 32), offsets=(-2, 0, 2), seed=0).sample(8)
    copy = Batch(*(t.clone() for t in (batch.image, batch.target, batch.annotated, batch.valid)))
    out = augment_batch(batch, torch.Generator().manual_seed(0), flip=1, bias_strength=0, gamma_log_std=0, max_noise=0)
    for a, b in zip((batch.image, batch.target), (copy.image, copy.target)):
        assert torch.equal(a, b)
    flipped = [i for i in range(8) if not torch.equal(out.target[i], batch.target[i])]
    assert flipped
    for i in flipped:
        torch.testing.assert_close(out.image[i], batch.image[i].flip(-1))
        assert torch.equal(out.annotated[i], batch.annotated[i].flip(-1))
    noisy = augment_batch(batch, torch.Generator().manual_seed(0), flip=None)
    assert noisy.image.shape == batch.image.shape and torch.isfinite(noisy.image).all()
    assert not torch.equal(noisy.image, batch.image)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_a_dense_reference_travels_with_the_labels_through_windows_and_flips(spatial_dims):
    volume, truth = toy_volume()
    config = tiny_config(spatial_dims=spatial_dims)
    case = prepare_case(volume, strokes(truth), config, reference=truth)
    annotated = case.labels > 0
    assert torch.equal(case.reference[annotated].long(), case.labels[annotated].long() - 1)
    patch = (40, 24) if spatial_dims == 2 else (6, 40, 24)
    batch = PatchSampler([case], spatial_dims=spatial_dims, patch=patch, offsets=(-2, 0, 2), seed=3).sample(6)
    assert batch.reference.shape == batch.target.shape
    assert (batch.reference[~batch.valid] == -1).all() and (batch.reference[batch.valid] >= 0).all()
    assert torch.equal(batch.reference[batch.annotated], batch.target[batch.annotated])
    out = augment_batch(batch, torch.Generator().manual_seed(0), flip=flip_dim(config))
    assert torch.equal(out.reference[out.annotated], out.target[out.annotated])
    assert not torch.equal(out.reference, batch.reference)  # some windows were mirrored
    plain = PatchSampler([prepare_case(volume, strokes(truth), config)], spatial_dims=spatial_dims, patch=patch, seed=3)
    assert plain.sample(2).reference is None


def test_a_reference_that_does_not_fit_is_refused():
    volume, truth = toy_volume()
    with pytest.raises(ValueError, match="grid"):
        prepare_case(volume, strokes(truth), tiny_config(), reference=truth[:, :8])
    with pytest.raises(ValueError, match="classes 0..7"):
        prepare_case(volume, strokes(truth), tiny_config(), reference=truth * 7 // 3)


def test_context_windows_lie_on_the_scan_not_in_the_air_around_it():
    volume, truth = toy_volume()
    case = prepare_case(volume, strokes(truth), _with_margin(tiny_config()))
    assert case.image.numel() > 8 * case.image[case.scan].numel()  # mostly air: a random grid point would miss
    sampler = PatchSampler([case], spatial_dims=2, patch=(6, 6), offsets=(-2, 0, 2), context_fraction=1.0, seed=3)
    windows = sampler.sample(32).image[:, 1]  # centre slices: the scan's image is non-zero nearly everywhere
    assert (windows.flatten(1).amax(dim=1) > 0).all()
