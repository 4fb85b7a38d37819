"""Grad-CAM on the project's networks (2D and 3D, odd sizes) and the hygiene rules:
hooks removed, modes and flags restored, inputs and parameter gradients untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medseg.config import ModelConfig
from napari_medseg.explain import grad_cam, tokens_to_grid
from napari_medseg.models import build_model
from tests.explain import one_torch_thread  # noqa: F401  (autouse fixture)

ARCH_KWARGS = {
    "unet": {"features": [4, 8, 16], "dropout": 0.2},
    "transunet": {
        "features": [4, 8, 16],
        "embed_dim": 16,
        "depth": 1,
        "num_heads": 2,
        "train_grid": 4,
        "dropout": 0.2,
    },
}
ODD_SHAPES = {2: (23, 17), 3: (11, 9, 13)}


def tiny_model(architecture: str, spatial_dims: int, in_channels: int = 2):
    torch.manual_seed(0)
    config = ModelConfig(
        architecture=architecture,
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        class_names=("background", "a", "b"),
        arch_kwargs=ARCH_KWARGS[architecture],
        dropout_sites=("decoder",),
    )
    return build_model(config)


def all_hooks(model) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("architecture", ["unet", "transunet"])
def test_networks_odd_sizes(architecture, spatial_dims, method):
    model = tiny_model(architecture, spatial_dims)
    shape = ODD_SHAPES[spatial_dims]
    image = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)
    region = np.zeros(shape, dtype=bool)
    region[(slice(2, 7),) * spatial_dims] = True
    cam = grad_cam(model, image, target_class=1, region=region, method=method)
    assert cam.shape == shape and cam.dtype == np.float32
    assert np.isfinite(cam).all() and (cam >= 0).all()
    assert cam.max() > 0


def test_transunet_token_grid_is_a_channel_map():
    model = tiny_model("transunet", 2)
    outputs = []
    handle = model.bottleneck.token_grid.register_forward_hook(lambda m, i, o: outputs.append(o))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 2, 23, 17))
    finally:
        handle.remove()
    # (B, embed_dim, *grid): 23x17 -> one pooling in the encoder, one in the bottleneck
    assert outputs[0].shape == (1, 16, 6, 5)


def test_token_sequence_layer_with_reshape():
    model = tiny_model("transunet", 2)
    image = np.random.default_rng(1).normal(size=(2, 23, 17)).astype(np.float32)
    region = np.ones((23, 17), dtype=bool)
    kwargs = {"target_class": 1, "region": region}
    with pytest.raises(ValueError, match="reshape="):
        grad_cam(model, image, layer="bottleneck.norm", **kwargs)  # (B, N, E) tokens
    via_tokens = grad_cam(
        model, image, layer="bottleneck.norm", reshape=tokens_to_grid((6, 5)), **kwargs
    )
    via_grid = grad_cam(model, image, layer="bottleneck.token_grid", **kwargs)
    np.testing.assert_allclose(via_tokens, via_grid, rtol=1e-5, atol=1e-7)


def test_default_layer_comes_from_the_config():
    model = tiny_model("unet", 2)
    image = np.random.default_rng(2).normal(size=(2, 15, 14)).astype(np.float32)
    kwargs = {"target_class": 1, "region": np.ones((15, 14), dtype=bool)}
    by_default = grad_cam(model, image, **kwargs)
    by_name = grad_cam(model, image, layer="decoder.levels.0", **kwargs)
    np.testing.assert_array_equal(by_default, by_name)


def test_model_and_input_left_as_found():
    model = tiny_model("unet", 2)
    model.train()
    model.decoder.eval()  # a mixed state must come back exactly
    model.encoder.levels[0].requires_grad_(False)
    modes = {name: m.training for name, m in model.named_modules()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    image = np.random.default_rng(3).normal(size=(2, 19, 21)).astype(np.float32)
    copy = image.copy()
    tensor = torch.from_numpy(image.copy())
    grad_cam(model, image, target_class=1, region=np.ones((19, 21), bool))
    grad_cam(model, tensor, target_class=1, region=np.ones((19, 21), bool), method="gradcam++")

    np.testing.assert_array_equal(image, copy)
    np.testing.assert_array_equal(tensor.numpy(), copy)
    assert not tensor.requires_grad
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), before[name])
    assert all_hooks(model) == 0
    assert torch.is_grad_enabled()  # no global flag flipped


def test_existing_parameter_gradients_are_kept():
    model = tiny_model("unet", 2)
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    region = np.ones((12, 12), dtype=bool)
    grad_cam(model, np.ones((2, 12, 12), np.float32), target_class=1, region=region)
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())


def test_runs_in_eval_mode():
    model = tiny_model("unet", 2)
    model.train()
    seen = []
    handle = model.register_forward_pre_hook(lambda m, i: seen.append(m.training))
    try:
        image = np.ones((2, 12, 12), np.float32)
        a = grad_cam(model, image, target_class=1, region=np.ones((12, 12), bool))
        b = grad_cam(model, image, target_class=1, region=np.ones((12, 12), bool))
    finally:
        handle.remove()
    assert seen == [False, False] and model.training
    np.testing.assert_array_equal(a, b)  # dropout off: deterministic


def test_cleanup_after_an_exception():
    model = tiny_model("unet", 2)
    model.train()

    def boom(module, inputs, output):
        raise RuntimeError("boom")

    handle = model.decoder.head.register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            grad_cam(model, np.ones((2, 12, 12), np.float32), target_class=1)
    finally:
        handle.remove()
    assert all_hooks(model) == 0
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_frozen_model_and_inference_mode():
    model = tiny_model("unet", 3, in_channels=1).requires_grad_(False)
    image = np.random.default_rng(4).normal(size=(1, 9, 10, 11)).astype(np.float32)
    region = np.ones((9, 10, 11), dtype=bool)
    plain = grad_cam(model, image, target_class=2, region=region)
    with torch.inference_mode():
        inside = grad_cam(model, image, target_class=2, region=region)
    np.testing.assert_array_equal(plain, inside)
    assert plain.max() > 0
    assert not any(p.requires_grad for p in model.parameters())


def test_image_shape_checked_against_the_model():
    model = tiny_model("unet", 2)
    with pytest.raises(ValueError, match=r"image shape \(2, 4, 5, 6\)"):
        grad_cam(model, np.zeros((2, 4, 5, 6), np.float32), target_class=1)
