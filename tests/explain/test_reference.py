"""Grad-CAM and Grad-CAM++ against numpy on a network small enough to differentiate by hand.

The network is conv(3x3, padding 1) -> ReLU -> conv(1x1) head, hooked at the ReLU. Its logits
are ``L_k(p) = sum_c W[k, c] A_c(p) + b_k``, so the gradient of ``sum_{p in R} L_t(p)`` with
respect to ``A_c(p)`` is ``W[t, c]`` inside the region R and 0 outside it.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from napari_medseg.explain import SegmentationTarget, grad_cam
from tests.explain import one_torch_thread  # noqa: F401  (autouse fixture)

FEATURES, CLASSES = 6, 3


def tiny_net(spatial_dims: int, in_channels: int = 2, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    conv = (nn.Conv2d, nn.Conv3d)[spatial_dims - 2]
    return nn.Sequential(
        conv(in_channels, FEATURES, 3, padding=1), nn.ReLU(), conv(FEATURES, CLASSES, 1)
    )


def numpy_forward(net: nn.Sequential, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Activations A (F, *S) after the ReLU and logits (K, *S), in float64."""
    w1 = net[0].weight.detach().double().numpy()
    b1 = net[0].bias.detach().double().numpy()
    w2 = net[2].weight.detach().double().numpy().reshape(CLASSES, FEATURES)
    b2 = net[2].bias.detach().double().numpy()
    x = image.astype(np.float64)
    _, *spatial = x.shape
    nd = len(spatial)
    padded = np.pad(x, [(0, 0)] + [(1, 1)] * nd)
    conv = np.zeros((FEATURES, *spatial))
    for offset in itertools.product(range(3), repeat=nd):
        patch = padded[(slice(None), *(slice(o, o + s) for o, s in zip(offset, spatial)))]
        conv += np.einsum("fc,c...->f...", w1[(slice(None), slice(None), *offset)], patch)
    acts = np.maximum(conv + b1.reshape(-1, *(1,) * nd), 0)
    logits = np.einsum("kf,f...->k...", w2, acts) + b2.reshape(-1, *(1,) * nd)
    return acts, logits


def numpy_grads(net: nn.Sequential, acts: np.ndarray, target: int, region: np.ndarray):
    w2 = net[2].weight.detach().double().numpy().reshape(CLASSES, FEATURES)
    return w2[target].reshape(-1, *(1,) * region.ndim) * region[None].astype(np.float64)


def expected_gradcam(acts, grads):
    weights = grads.reshape(len(grads), -1).mean(axis=1)
    return np.maximum(np.tensordot(weights, acts, axes=1), 0)


def expected_gradcam_pp(acts, grads):
    g2, g3 = grads**2, grads**3
    sum_a = acts.reshape(len(acts), -1).sum(axis=1).reshape(-1, *(1,) * (acts.ndim - 1))
    denom = 2 * g2 + sum_a * g3
    alpha = np.divide(g2, denom, out=np.zeros_like(g2), where=denom != 0)
    weights = (alpha * np.maximum(grads, 0)).reshape(len(acts), -1).sum(axis=1)
    return np.maximum(np.tensordot(weights, acts, axes=1), 0)


EXPECTED = {"gradcam": expected_gradcam, "gradcam++": expected_gradcam_pp}
SHAPES = {2: (13, 10), 3: (7, 6, 5)}


@pytest.mark.parametrize("method", sorted(EXPECTED))
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("given_region", [False, True])
def test_matches_numpy(method, spatial_dims, given_region):
    net = tiny_net(spatial_dims)
    rng = np.random.default_rng(spatial_dims)
    image = rng.normal(size=(2, *SHAPES[spatial_dims])).astype(np.float32)
    acts, logits = numpy_forward(net, image)
    with torch.no_grad():
        torch_logits = net(torch.from_numpy(image)[None])[0].double().numpy()
    np.testing.assert_allclose(torch_logits, logits, atol=1e-5)  # the hand forward is right
    target = int(np.bincount(logits.argmax(0).ravel(), minlength=CLASSES)[1:].argmax()) + 1
    if given_region:
        region = np.zeros(SHAPES[spatial_dims], dtype=bool)
        region[(slice(1, 5),) * spatial_dims] = True
    else:
        region = logits.argmax(0) == target
    assert region.any()

    expected = EXPECTED[method](acts, numpy_grads(net, acts, target, region))
    got = grad_cam(
        net, image, target_class=target, layer="1", method=method,
        region=region if given_region else None,
    )  # fmt: skip

    assert got.dtype == np.float32 and got.shape == image.shape[1:]
    assert expected.max() > 0
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * expected.max())


def test_layer_by_module_equals_layer_by_name():
    net = tiny_net(2)
    image = np.random.default_rng(1).normal(size=(2, 12, 9)).astype(np.float32)
    by_name = grad_cam(net, image, target_class=1, layer="1", region=np.ones((12, 9), bool))
    by_module = grad_cam(net, image, target_class=1, layer=net[1], region=np.ones((12, 9), bool))
    np.testing.assert_array_equal(by_name, by_module)


def test_empty_predicted_region_gives_zeros_and_warns(caplog):
    net = tiny_net(2)
    with torch.no_grad():  # class 2 never wins the argmax
        net[2].bias[2] = -1e3
    image = np.random.default_rng(2).normal(size=(2, 11, 8)).astype(np.float32)
    with caplog.at_level("WARNING", logger="napari_medseg.explain"):
        cam = grad_cam(net, image, target_class=2, layer="1")
    assert cam.shape == (11, 8) and not cam.any()
    assert "class 2" in caplog.text


def test_segmentation_target_scores_per_sample():
    logits = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    region = torch.zeros(4, 5, dtype=torch.bool)
    region[1, 2] = region[3, 4] = True
    scores = SegmentationTarget(1, region).score(logits)
    expected = logits[:, 1][:, region].sum(dim=1)
    torch.testing.assert_close(scores, expected)
    # default region: argmax is the last class everywhere here
    assert SegmentationTarget(2).empty(logits).tolist() == [False, False]
    assert SegmentationTarget(1).empty(logits).tolist() == [True, True]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_class": 7}, "target_class 7"),
        ({"target_class": 1, "layer": "nope"}, "layer 'nope'"),
        ({"target_class": 1, "layer": "1", "method": "lime"}, "method 'lime'"),
        ({"target_class": 1, "layer": "1", "region": np.ones((3, 3), bool)}, "region shape"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    net = tiny_net(2)
    kwargs.setdefault("layer", "1")
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        grad_cam(net, np.zeros((2, 9, 9), np.float32), **kwargs)


def test_plain_module_without_layer_asks_for_one():
    with pytest.raises(ValueError, match="pass layer="):
        grad_cam(tiny_net(2), np.zeros((2, 9, 9), np.float32), target_class=1)
