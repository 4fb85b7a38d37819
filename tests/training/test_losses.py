"""Partial-label losses: unannotated voxels never enter the loss, not even as background."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from napari_medseg.training.losses import partial_cross_entropy, partial_soft_dice, segmentation_loss
from tests.tiny_models import tiny_model
from tests.training import single_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")

LOSSES = {
    "cross_entropy": partial_cross_entropy,
    "soft_dice": lambda logits, target, annotated, weights: partial_soft_dice(logits, target, annotated),
    "segmentation": segmentation_loss,
}


def _problem(spatial, seed=0, k=4):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn((2, k, *spatial), generator=g, requires_grad=True)
    target = torch.randint(0, k, (2, *spatial), generator=g)
    annotated = torch.rand((2, *spatial), generator=g) < 0.2
    return logits, target, annotated


@pytest.mark.parametrize("spatial", [(9, 7), (5, 6, 4)], ids=["2d", "3d"])
@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("weighted", [False, True])
def test_unannotated_voxels_get_exactly_zero_gradient(name, spatial, weighted):
    logits, target, annotated = _problem(spatial)
    weights = torch.tensor([0.5, 1.0, 2.0, 3.0]) if weighted else None
    LOSSES[name](logits, target, annotated, weights).backward()
    grad = logits.grad.movedim(1, -1)  # (B, *S, K)
    assert torch.count_nonzero(grad[~annotated]) == 0
    assert torch.count_nonzero(grad[annotated]) > 0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_ignores_logits_and_targets_of_unannotated_voxels(name):
    logits, target, annotated = _problem((8, 8), seed=1)
    loss = LOSSES[name](logits, target, annotated, None)
    g = torch.Generator().manual_seed(5)
    other_logits = torch.where(annotated[:, None], logits, 10 * torch.randn(logits.shape, generator=g))
    other_target = torch.where(annotated, target, torch.zeros_like(target))  # "background" there
    assert LOSSES[name](other_logits, other_target, annotated, None).item() == loss.item()


def test_nothing_annotated_gives_zero_with_a_graph():
    logits, target, annotated = _problem((6, 6))
    loss = segmentation_loss(logits, target, torch.zeros_like(annotated))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(logits.grad) == 0


def test_optimising_free_logits_leaves_unannotated_voxels_exactly_as_they_were():
    """Only class 1 is annotated; the background logits elsewhere never move."""
    logits, _, annotated = _problem((10, 10), seed=2)
    start = logits.detach().clone()
    target = torch.ones(annotated.shape, dtype=torch.long)
    optimizer = torch.optim.Adam([logits], lr=0.3)  # zero gradient -> exactly zero step
    for _ in range(20):
        optimizer.zero_grad()
        segmentation_loss(logits, target, annotated).backward()
        optimizer.step()
    moved = (logits.detach() != start).any(dim=1)
    assert torch.equal(moved, annotated)
    assert (logits.detach().argmax(1)[annotated] == 1).all()


def _train_slice(loss_fn, steps=25):
    """A tiny 2D U-Net trained on one 2.5D slice whose only strokes are class 1."""
    torch.manual_seed(0)
    model = tiny_model(0).train()
    g = torch.Generator().manual_seed(3)
    image = torch.rand((1, 3, 24, 24), generator=g)
    annotated = torch.zeros((1, 24, 24), dtype=torch.bool)
    annotated[0, 10:14, 4:20] = True  # a stroke of class 1 ("CSF")
    target = torch.where(annotated, torch.ones((1, 24, 24), dtype=torch.long), torch.zeros((1, 24, 24), dtype=torch.long))
    with torch.no_grad():
        before = torch.softmax(model.eval()(image), 1)[0, 0][~annotated[0]].mean().item()
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(model(image), target, annotated).backward()
        optimizer.step()
    with torch.no_grad():
        probabilities = torch.softmax(model.eval()(image), 1)[0]
    return before, probabilities[0][~annotated[0]].mean().item(), probabilities[1][annotated[0]].mean().item()


def test_one_class_annotation_does_not_teach_everything_else_is_background():
    before, background_after, stroke_class = _train_slice(lambda lo, t, a: segmentation_loss(lo, t, a))
    assert stroke_class > 0.5  # the strokes were learnt
    assert background_after <= before + 1e-3  # and nothing pushed the rest toward background
    # The classic bug (unannotated = background) does exactly that:
    _, naive_background, _ = _train_slice(lambda lo, t, a: F.cross_entropy(lo, t))
    assert naive_background > max(0.6, before + 0.2)
