"""grad_cam_volume: per-slice 2.5D input with context offsets, 3D windows, progress, cancel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medseg import control
from napari_medseg.config import ModelConfig
from napari_medseg.explain import Cancelled, grad_cam, grad_cam_volume
from napari_medseg.models import build_model
from tests.explain import one_torch_thread  # noqa: F401  (autouse fixture)

OFFSETS = (-2, 0, 2)


def tiny_unet(spatial_dims: int, in_channels: int):
    torch.manual_seed(0)
    config = ModelConfig(
        architecture="unet",
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        class_names=("background", "a", "b"),
        arch_kwargs={"features": [4, 8, 16]},
        patch_size=(12,) * spatial_dims,
    )
    return build_model(config)


@pytest.fixture
def volume() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(7, 19, 17)).astype(np.float32)


def stacked(volume: np.ndarray, k: int, offsets=OFFSETS) -> np.ndarray:
    """Slice k with its neighbours as channels, zeros outside the volume."""
    out = np.zeros((len(offsets), *volume.shape[1:]), dtype=np.float32)
    for c, o in enumerate(offsets):
        if 0 <= k + o < len(volume):
            out[c] = volume[k + o]
    return out


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_slices_match_grad_cam_per_slice(volume, method):
    model = tiny_unet(2, len(OFFSETS))
    region = np.zeros(volume.shape, dtype=bool)
    region[:, 4:12, 3:9] = True
    region[5] = False  # an empty slice gives zeros
    calls = []
    copy = volume.copy()
    cam = grad_cam_volume(
        model, volume, target_class=1, region=region, method=method, batch=3,
        context_offsets=OFFSETS, progress=lambda done, total: calls.append((done, total)),
    )  # fmt: skip
    assert cam.shape == volume.shape and cam.dtype == np.float32 and (cam >= 0).all()
    assert calls == [(3, 7), (6, 7), (7, 7)]
    np.testing.assert_array_equal(volume, copy)
    for k in range(len(volume)):
        expected = grad_cam(
            model, stacked(volume, k), target_class=1, region=region[k], method=method
        )
        np.testing.assert_allclose(cam[k], expected, rtol=1e-4, atol=1e-6 * expected.max())
    assert not cam[5].any() and cam[4].any()


def test_default_region_per_slice(volume):
    model = tiny_unet(2, len(OFFSETS))
    cam = grad_cam_volume(model, volume, target_class=2, context_offsets=OFFSETS, batch=4)
    for k in (0, 3, 6):
        expected = grad_cam(model, stacked(volume, k), target_class=2)
        np.testing.assert_allclose(cam[k], expected, rtol=1e-4, atol=1e-6 * max(expected.max(), 1))


def test_slice_axis(volume):
    model = tiny_unet(2, 1)
    along_x = grad_cam_volume(model, volume, target_class=1, slice_axis=2, batch=5)
    moved = grad_cam_volume(model, np.moveaxis(volume, 2, 0), target_class=1, batch=5)
    assert along_x.shape == volume.shape
    np.testing.assert_allclose(along_x, np.moveaxis(moved, 0, 2), rtol=1e-5, atol=1e-8)


def test_cancel_between_batches(volume):
    model = tiny_unet(2, len(OFFSETS))
    model.train()
    calls = []
    with pytest.raises(Cancelled):
        grad_cam_volume(
            model, volume, target_class=1, context_offsets=OFFSETS, batch=2,
            progress=lambda done, total: calls.append(done), should_stop=lambda: len(calls) >= 2,
        )  # fmt: skip
    assert calls == [2, 4]
    assert Cancelled is control.Cancelled  # the one the inference layer raises too
    assert all(m.training for m in model.modules())
    assert all(not m._forward_hooks for m in model.modules())


def test_offsets_must_match_the_model(volume):
    model = tiny_unet(2, 5)
    with pytest.raises(ValueError, match="5 input channels"):
        grad_cam_volume(model, volume, target_class=1, context_offsets=OFFSETS)


def test_3d_windows_blend(volume):
    model = tiny_unet(3, 1)
    big = np.random.default_rng(1).normal(size=(20, 17, 23)).astype(np.float32)
    region = np.zeros(big.shape, dtype=bool)
    region[4:15, 3:12, 5:20] = True
    calls = []
    cam = grad_cam_volume(
        model, big, target_class=1, region=region, batch=4,
        progress=lambda done, total: calls.append((done, total)),
    )  # fmt: skip
    assert cam.shape == big.shape and cam.dtype == np.float32 and (cam >= 0).all()
    assert np.isfinite(cam).all() and cam.max() > 0
    # window = the config's patch_size 12, overlap 0.5: 3 x 2 x 3 windows, 4 per batch
    assert calls == [(4, 18), (8, 18), (12, 18), (16, 18), (18, 18)]


def test_3d_single_window_equals_grad_cam():
    model = tiny_unet(3, 1)
    vol = np.random.default_rng(2).normal(size=(9, 11, 10)).astype(np.float32)
    region = np.zeros(vol.shape, dtype=bool)
    region[2:7, 3:8, 1:9] = True
    cam = grad_cam_volume(model, vol, target_class=2, region=region, window=(16, 16, 16))
    expected = grad_cam(model, vol[None], target_class=2, region=region)
    np.testing.assert_allclose(cam, expected, rtol=1e-4, atol=1e-6 * expected.max())


def test_explicit_spatial_dims_for_a_plain_3d_module():
    net = torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 2, 1)
    )
    vol = np.random.default_rng(3).normal(size=(10, 9, 8)).astype(np.float32)
    cam = grad_cam_volume(
        net, vol, target_class=1, layer="1", spatial_dims=3, window=6,
        region=np.ones(vol.shape, dtype=bool),
    )  # fmt: skip
    assert cam.shape == vol.shape and (cam > 0).any()
