"""Adebayo et al. (2018) sanity checks on a U-Net trained briefly on a toy task.

Class 1 is "bright square" on a noisy background. A map that explains the model must change
when the weights are randomised, and must depend on the region it is asked about.

Layers: the checks hook the last decoder level (``decoder.levels.1`` here, full resolution),
where the map of this briefly trained model reliably covers the squares; deeper layers of so
small a model give erratic maps (the task is solved almost by the first level). At that
layer, right before the linear 1x1 head, the gradient is the head's weight inside the region
and 0 outside, so every region gives the same map up to scale (tested below); the region
check therefore hooks ``decoder.levels.1.block.norm2``, one LeakyReLU before the head.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy import stats

from napari_medseg.config import ModelConfig
from napari_medseg.explain import grad_cam
from napari_medseg.models import build_model
from tests.explain import one_thread, one_torch_thread  # noqa: F401  (autouse fixture)

SIZE = 32
CONFIG = ModelConfig(
    architecture="unet",
    spatial_dims=2,
    in_channels=1,
    class_names=("background", "square"),
    arch_kwargs={"features": [8, 16, 32]},
)


def toy_image(rng: np.random.Generator, squares: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Image (1, SIZE, SIZE) and labels (SIZE, SIZE): bright squares of side 6-9 on noise."""
    image = rng.normal(0.0, 0.3, size=(SIZE, SIZE)).astype(np.float32)
    labels = np.zeros((SIZE, SIZE), dtype=np.int64)
    for _ in range(squares):
        side = int(rng.integers(6, 10))
        y, x = rng.integers(0, SIZE - side, size=2)
        labels[y : y + side, x : x + side] = 1
    image[labels == 1] += 2.0
    return image[None], labels


def two_squares() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A test image with two squares far apart, and one mask per square."""
    rng = np.random.default_rng(123)
    image = rng.normal(0.0, 0.3, size=(SIZE, SIZE)).astype(np.float32)
    first = np.zeros((SIZE, SIZE), dtype=bool)
    second = np.zeros((SIZE, SIZE), dtype=bool)
    first[3:11, 4:12] = True
    second[20:28, 19:27] = True
    image[first | second] += 2.0
    return image[None], first, second


LAST = "decoder.levels.1"  # the last decoder level: its output feeds the 1x1 head
BEFORE_LAST_ACT = "decoder.levels.1.block.norm2"


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (flattened)."""
    return float(stats.spearmanr(a.ravel(), b.ravel()).statistic)


def mass(cam: np.ndarray, where: np.ndarray) -> float:
    """Fraction of the map's total inside the mask."""
    return float(cam[where].sum() / cam.sum())


def total_variation(a: np.ndarray, b: np.ndarray) -> float:
    """Half the L1 distance of the maps normalised to sum 1: 0 = same up to scale, 1 = disjoint."""
    return float(0.5 * np.abs(a / a.sum() - b / b.sum()).sum())


def randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A copy of ``model`` with every layer re-initialised (same architecture and config)."""
    torch.manual_seed(seed)
    clone = copy.deepcopy(model)
    for module in clone.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return clone


@pytest.fixture(scope="module")
def trained():
    """A U-Net trained for 30 steps of 8 toy images (about 1 s on one thread)."""
    torch.manual_seed(0)
    model = build_model(CONFIG)
    rng = np.random.default_rng(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    with one_thread():
        for _ in range(30):
            pairs = [toy_image(rng) for _ in range(8)]
            x = torch.from_numpy(np.stack([p[0] for p in pairs]))
            y = torch.from_numpy(np.stack([p[1] for p in pairs]))
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    image, first, second = two_squares()
    with torch.no_grad():
        pred = model.eval()(torch.from_numpy(image)[None]).argmax(1)[0].numpy()
    dice = 2 * (pred.astype(bool) & (first | second)).sum() / (pred.sum() + (first | second).sum())
    assert dice > 0.7, f"the toy model did not learn the squares (Dice {dice:.2f})"
    return model


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_randomised_weights_change_the_map(trained, method):
    image, first, second = two_squares()
    squares = first | second
    cam = grad_cam(trained, image, target_class=1, layer=LAST, region=squares, method=method)
    assert mass(cam, squares) > 0.8  # meaningful: the squares cover 1/8 of the image
    for seed in (1, 2, 3):
        cam_random = grad_cam(
            randomised(trained, seed), image, target_class=1, layer=LAST, region=squares,
            method=method,
        )  # fmt: skip
        rho = spearman(cam, cam_random)
        assert rho < 0.5, f"map barely changed with random weights (seed {seed}, rho {rho:.2f})"


def test_region_changes_the_map(trained):
    image, first, _ = two_squares()
    elsewhere = np.zeros_like(first)
    elsewhere[20:28, 3:11] = True  # background, far from both squares
    on_square = grad_cam(trained, image, target_class=1, layer=BEFORE_LAST_ACT, region=first)
    off_square = grad_cam(trained, image, target_class=1, layer=BEFORE_LAST_ACT, region=elsewhere)
    assert on_square.max() > 0 and off_square.max() > 0
    assert total_variation(on_square, off_square) > 0.15


def test_region_only_scales_the_map_before_a_linear_head(trained):
    """Grad-CAM's known limit: at the layer feeding a 1x1 head, weights = head row * |R| / N."""
    image, first, second = two_squares()
    a = grad_cam(trained, image, target_class=1, layer=LAST, region=first)
    b = grad_cam(trained, image, target_class=1, layer=LAST, region=first | second)
    np.testing.assert_allclose(b, a * (first | second).sum() / first.sum(), rtol=1e-4)


def test_default_region_explains_the_prediction(trained):
    image, first, second = two_squares()
    cam = grad_cam(trained, image, target_class=1, layer=LAST)
    assert mass(cam, first | second) > 0.8
