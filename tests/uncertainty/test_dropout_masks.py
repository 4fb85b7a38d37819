"""Dropout masks drawn once per sample and reused, rolled, for the later batches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_medseg.uncertainty.dropout_masks import ReusedMasks


def _apply(store: ReusedMasks, module: nn.Module, x: torch.Tensor, sample: int) -> torch.Tensor:
    store.sample = sample
    with store.installed([module]):
        return module(x)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_masks_keep_each_element_with_probability_one_minus_p_and_scale_as_dropout(p):
    torch.manual_seed(0)
    module = nn.Dropout(p).train()
    store = ReusedMasks()
    x = torch.ones(4, 8, 64, 64)
    first = _apply(store, module, x, 0)
    later = _apply(store, module, x, 0)
    for y in (first, later):
        values = torch.unique(y).tolist()
        assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / (1 - p))
        assert (y > 0).float().mean().item() == pytest.approx(1 - p, abs=0.01)
    assert int((first > 0).sum()) == int((later > 0).sum())  # the same pool, rolled
    assert not torch.equal(first, later)


def test_each_sample_has_its_own_pool_and_a_new_shape_draws_a_new_one():
    torch.manual_seed(1)
    module = nn.Dropout(0.3).train()
    store = ReusedMasks()
    x = torch.ones(2, 4, 16, 16)
    a, b = _apply(store, module, x, 0), _apply(store, module, x, 1)
    assert not torch.equal(a, b)
    smaller = _apply(store, module, torch.ones(1, 4, 16, 16), 0)  # a last, smaller batch
    assert smaller.shape == (1, 4, 16, 16)
    assert len(store._pools) == 3
    store.clear()
    assert not store._pools and store.sample == 0


def test_channel_dropout_masks_whole_channels():
    torch.manual_seed(2)
    module = nn.Dropout2d(0.5).train()
    store = ReusedMasks()
    y = _apply(store, module, torch.ones(3, 16, 8, 8), 0)
    per_channel = y.flatten(2)
    assert torch.all(per_channel.amin(dim=2) == per_channel.amax(dim=2))  # all or nothing per channel


def test_the_module_is_itself_again_after_and_in_eval_mode_untouched():
    module = nn.Dropout(0.5)
    store = ReusedMasks()
    x = torch.ones(2, 2, 4, 4)
    with store.installed([module]):
        assert "forward" in module.__dict__
        module.eval()
        assert torch.equal(module(x), x)
    assert "forward" not in module.__dict__
    with pytest.raises(RuntimeError):
        with store.installed([module]):
            raise RuntimeError("boom")
    assert "forward" not in module.__dict__


def test_beyond_the_pool_budget_masks_are_drawn_fresh(monkeypatch):
    from napari_medseg.uncertainty import dropout_masks

    monkeypatch.setattr(dropout_masks, "POOL_BYTES", 100)
    torch.manual_seed(3)
    module = nn.Dropout(0.5).train()
    store = ReusedMasks()
    x = torch.ones(1, 1, 16, 16)  # 256 elements: over the budget
    first, second = _apply(store, module, x, 0), _apply(store, module, x, 0)
    assert not store._pools and not torch.equal(first, second)
