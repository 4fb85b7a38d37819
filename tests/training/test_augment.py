"""Intensity helpers of the synthesis: the robust scale and its partial-sort quantile."""

from __future__ import annotations

import pytest
import torch

from napari_medseg.training.augment import _upper_quantile, foreground_scale


@pytest.mark.parametrize("count", [1, 2, 3, 10, 999, 200_000])
def test_upper_quantile_matches_torch_quantile(count):
    values = torch.rand(count, generator=torch.Generator().manual_seed(count)) * 7
    for q in (0.9, 0.995, 1.0):
        # the same order statistics; the interpolation weight may differ in its last bit
        torch.testing.assert_close(_upper_quantile(values, q), torch.quantile(values, q), rtol=1e-6, atol=0)


def test_foreground_scale_is_the_foreground_percentile_and_one_for_empty_images():
    image = torch.zeros((4, 50, 50))
    image[:, 10:40, 10:40] = torch.linspace(1, 100, 30 * 30).reshape(30, 30)
    foreground = image.reshape(-1)[image.reshape(-1) > 2.0]
    torch.testing.assert_close(foreground_scale(image), torch.quantile(foreground, 0.995), rtol=1e-6, atol=0)
    assert float(foreground_scale(torch.zeros((3, 3)))) == 1.0
