"""The inference engine with tiny real networks: shapes, invariance, progress, cancel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medseg.control import Cancelled
from napari_medseg.inference import segment
from napari_medseg.inference.engine import predict_slices, predict_windows, slice_batch
from napari_medseg.inference.tiling import context_stack, gaussian_importance, window_starts
from napari_medseg.types import Geometry, Volume
from tests.tiny_models import tiny_model


def _head(shape=(12, 20, 18)) -> np.ndarray:
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    radius = np.sqrt(z**2 + y**2 + x**2)
    return (np.where(radius < 0.8, 100 + 50 * (radius < 0.5), 0) + np.random.default_rng(0).random(shape)).astype(np.float32)


def test_context_stack_zero_outside_volume():
    volume = torch.arange(4, dtype=torch.float32)[:, None, None].repeat(1, 2, 2)
    stack = context_stack(volume, torch.tensor([0, 3]), (-1, 0, 1))
    assert stack[0, 0].sum() == 0 and stack[0, 1, 0, 0] == 0 and stack[0, 2, 0, 0] == 1
    assert stack[1, 2].sum() == 0 and stack[1, 0, 0, 0] == 2


def test_predict_slices_shapes_progress_and_cancel():
    model = tiny_model()
    image = np.random.default_rng(0).random((7, 19, 23)).astype(np.float32)
    calls = []
    probabilities = predict_slices(model, image, offsets=(-2, 0, 2), batch_size=3, progress=lambda d, t: calls.append((d, t)))
    assert probabilities.shape == (4, 7, 19, 23)
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)
    assert calls == [(3, 7), (6, 7), (7, 7)]
    with pytest.raises(Cancelled):
        predict_slices(model, image, offsets=(-2, 0, 2), batch_size=3, should_stop=lambda: True)


def test_window_helpers():
    assert window_starts(10, 4, 0.5) == [0, 2, 4, 6]
    assert window_starts(11, 4, 0.5) == [0, 2, 4, 6, 7]
    assert window_starts(3, 4, 0.5) == [0]
    weight = gaussian_importance((5, 7, 9))
    assert weight.shape == (5, 7, 9) and weight.max() == 1.0 and weight.min() > 0


def test_predict_windows_3d_odd_shape():
    model = tiny_model(spatial_dims=3)
    image = np.random.default_rng(0).random((21, 17, 19)).astype(np.float32)
    probabilities = predict_windows(model, image, patch=(16, 16, 16), overlap=0.5)
    assert probabilities.shape == (4, 21, 17, 19)
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_flipped_and_permuted_copy_gets_the_same_labels(spatial_dims):
    """The model sees the same canonical grid whatever the storage order of the scan."""
    model = tiny_model(spatial_dims=spatial_dims)
    original = Volume(_head(), Geometry((1.0, 1.0, 1.0), (5.0, -3.0, 2.0), np.diag([1.0, -1.0, -1.0])))
    permutation = (2, 0, 1)
    array = np.flip(np.transpose(original.array, permutation), axis=1).copy()
    direction = original.direction[:, list(permutation)]
    direction[:, 1] *= -1
    first = [0, 0, 0]
    first[permutation[1]] = original.shape[permutation[1]] - 1
    origin = tuple(original.geometry.index_to_physical(first)[0])
    copy = Volume(array, Geometry((1.0, 1.0, 1.0), origin, direction))

    a = segment(original, model, device="cpu", precision="fp32")
    b = segment(copy, model, device="cpu", precision="fp32")
    mapped_back = np.transpose(np.flip(b.labels, axis=1), np.argsort(permutation))
    np.testing.assert_array_equal(mapped_back, a.labels)
    assert a.labels.shape == original.shape and b.labels.shape == copy.shape
    np.testing.assert_allclose(a.probabilities.sum(axis=-1), 1.0, atol=1e-5)


def test_segment_restores_training_mode_and_reports_timings():
    model = tiny_model()
    model.train()
    volume = Volume(_head(), Geometry((1.0, 1.0, 1.0), (0, 0, 0)))
    result = segment(volume, model, device="cpu", precision="fp32")
    assert model.training
    assert set(result.timings) >= {"preprocess", "network", "postprocess", "restore", "total"}
    assert result.labels.dtype == np.uint8 and result.device == "cpu" and result.precision == "fp32"


def test_segment_cancel():
    volume = Volume(_head(), Geometry((1.0, 1.0, 1.0), (0, 0, 0)))
    with pytest.raises(Cancelled):
        segment(volume, tiny_model(), device="cpu", should_stop=lambda: True)


def test_a_volume_smaller_than_the_patch_is_padded_with_air_to_it():
    """Networks trained on whole fields of view see one: the same as running the padded volume."""
    model = tiny_model(spatial_dims=3)
    image = np.random.default_rng(1).random((10, 13, 16)).astype(np.float32)
    out = predict_windows(model, image, patch=(16, 16, 16))
    padded = np.pad(image, [(3, 3), (1, 2), (0, 0)])
    with torch.inference_mode():
        expected = torch.softmax(model(torch.from_numpy(padded)[None, None]), dim=1)[0].numpy()
    np.testing.assert_allclose(out, expected[:, 3:13, 1:14, :], atol=1e-5)


@pytest.mark.parametrize(("shape", "expected"), [((256, 256), 8), ((180, 150), 8), ((358, 358), 4), ((512, 512), 2), ((4096, 4096), 1)])
def test_default_slice_batches_hold_about_eight_head_slices_of_pixels(shape, expected):
    assert slice_batch(shape) == expected


def _background(shape) -> np.ndarray:
    out = np.zeros((4, *shape), np.float32)
    out[0] = 1.0
    return out


def test_slices_outside_the_region_are_skipped_and_certain_background():
    model = tiny_model()
    image = np.random.default_rng(1).random((12, 19, 23)).astype(np.float32)
    within = np.zeros(image.shape, bool)
    within[3, 5, 5] = within[4:6, 10:12, 2] = within[9, 0, 0] = True  # slices 3-5 and 9
    calls = []
    full = predict_slices(model, image, offsets=(-2, 0, 2), batch_size=2)
    part = predict_slices(model, image, offsets=(-2, 0, 2), batch_size=2, within=within, progress=lambda d, t: calls.append((d, t)))
    kept = [2, 3, 4, 5, 8, 9]  # the slabs of 2 holding them, whole
    np.testing.assert_array_equal(part[:, kept], full[:, kept])  # the neighbours still feed each slice's context
    others = [z for z in range(12) if z not in kept]
    np.testing.assert_array_equal(part[:, others], _background((len(others), 19, 23)))
    assert calls == [(2, 6), (4, 6), (6, 6)]  # only kept slices are counted
    empty = predict_slices(model, image, offsets=(-2, 0, 2), within=np.zeros(image.shape, bool))
    np.testing.assert_array_equal(empty, _background(image.shape))


def test_windows_touching_the_region_give_it_the_full_blend():
    model = tiny_model(spatial_dims=3)
    image = np.random.default_rng(2).random((30, 18, 20)).astype(np.float32)
    within = np.zeros(image.shape, bool)
    within[2:5, 3:6, 4:7] = True
    full = predict_windows(model, image, patch=(16, 16, 16), overlap=0.5)
    calls = []
    part = predict_windows(model, image, patch=(16, 16, 16), overlap=0.5, within=within, progress=lambda d, t: calls.append(t))
    np.testing.assert_array_equal(part[:, within], full[:, within])
    assert calls[-1] < 8  # fewer windows than the full run's
    far = np.zeros(image.shape, bool)
    far[26:] = True  # no kept window reaches the last slices
    np.testing.assert_array_equal(part[:, far], _background(image.shape)[:, far])
    np.testing.assert_allclose(part.sum(axis=0), 1.0, atol=1e-5)
