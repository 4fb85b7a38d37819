"""Display ranges of float maps: robust percentiles of the map inside the scan's foreground."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.display import map_contrast_limits, scan_foreground, transparent_ramp
from tests.small_real import small_real_scan, tiny_uncertainty


@pytest.fixture(scope="module")
def scan(shared_data):
    return small_real_scan(shared_data)


@pytest.fixture(scope="module")
def total_map(scan):
    return tiny_uncertainty(scan)


def test_scan_foreground_of_a_real_head_and_of_ct_air(scan):
    mask = scan_foreground(scan.array)
    assert mask.shape == scan.shape and mask.dtype == bool
    assert 0.2 < mask.mean() < 0.8  # the head, not the air around it nor everything
    ct_like = scan.array.astype(np.float32) * 4 - 1000  # air at -1000 HU is background too
    np.testing.assert_array_equal(scan_foreground(ct_like), mask)
    assert not scan_foreground(np.full((3, 4, 5), 7.0)).any()


def test_limits_of_a_real_uncertainty_map_come_from_the_foreground(scan, total_map):
    foreground = scan_foreground(scan.array)
    low, high = map_contrast_limits(total_map, foreground)
    inside = total_map[foreground]
    assert np.ptp(inside) > 0  # a real, non-constant map
    np.testing.assert_allclose((low, high), np.percentile(inside.astype(np.float64), [1.0, 99.5]), rtol=1e-6)
    assert inside.min() <= low < high <= inside.max()
    assert (inside > high).mean() == pytest.approx(0.005, abs=0.003)
    # the air around the head pulls the whole grid's range elsewhere: the foreground matters
    assert (low, high) != pytest.approx(tuple(np.percentile(total_map, [1.0, 99.5])), rel=1e-3)


def test_limits_of_constant_and_empty_maps_and_bad_arguments():
    assert map_contrast_limits(np.zeros((4, 5, 6))) == (0.0, 1.0)
    assert map_contrast_limits(np.ones((4, 5, 6))) == (0.0, 1.0)  # a probability of 1 everywhere
    assert map_contrast_limits(np.full((2, 2, 2), np.nan)) == (0.0, 1.0)
    skewed = np.zeros(1000)
    skewed[-3:] = [0.5, 0.7, 0.9]  # fewer outliers than the top percentile: the maximum shows them
    assert map_contrast_limits(skewed) == (0.0, 0.9)
    with pytest.raises(ValueError, match=r"percentiles \(99, 1\)"):
        map_contrast_limits(np.arange(10.0), percentiles=(99, 1))
    with pytest.raises(ValueError, match=r"foreground shape \(3,\)"):
        map_contrast_limits(np.arange(10.0), np.ones(3, bool))


def test_transparent_ramp_fades_the_low_end_only():
    table = np.ones((256, 4))
    ramp = transparent_ramp(table, until=0.25)
    assert ramp[0, 3] == 0.0 and ramp[-1, 3] == 1.0 and ramp[128, 3] == 1.0
    assert np.all(np.diff(ramp[:, 3]) >= 0)
    np.testing.assert_array_equal(ramp[:, :3], table[:, :3])
    assert table[0, 3] == 1.0  # the input is left as it was
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        transparent_ramp(np.ones(4))
