"""Geometry validation and index/physical mapping."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.types import Geometry, Volume


def test_index_to_physical_and_back():
    direction = np.array([[0, 1, 0], [1, 0, 0], [0, 0, -1]], dtype=float)
    geometry = Geometry((2.0, 0.5, 0.25), (10.0, -5.0, 3.0), direction)
    index = np.array([[1, 2, 3], [0, 0, 0]])
    physical = geometry.index_to_physical(index)
    expected = np.array([10.0, -5.0, 3.0]) + (index * [2.0, 0.5, 0.25]) @ direction.T
    np.testing.assert_allclose(physical, expected)
    np.testing.assert_allclose(geometry.physical_to_index(physical), index, atol=1e-12)
    assert not geometry.is_oblique
    assert geometry.anisotropy == 8.0
    assert geometry.voxel_volume_ml() == pytest.approx(0.25e-3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spacing": (1, 0, 1), "origin": (0, 0, 0)}, "spacing .* must be finite and positive"),
        ({"spacing": (1, 1), "origin": (0, 0, 0)}, "must have 3 values"),
        ({"spacing": (1, 1, 1), "origin": (0, np.nan, 0)}, "origin .* must be finite"),
        ({"spacing": (1, 1, 1), "origin": (0, 0, 0), "direction": np.ones((3, 3))}, "not orthonormal"),
    ],
)
def test_invalid_geometry_names_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Geometry(**kwargs)


def test_volume_with_array_keeps_geometry():
    volume = Volume(np.zeros((2, 3, 4)), Geometry((1, 1, 1), (0, 0, 0)), modality="MR")
    other = volume.with_array(np.ones((2, 3, 4), np.uint8))
    assert other.geometry is volume.geometry and other.modality == "MR"
    with pytest.raises(ValueError, match=r"\(2, 3, 5\) does not match the grid \(2, 3, 4\)"):
        volume.with_array(np.ones((2, 3, 5)))


def test_one_grid_comparison_names_what_differs():
    from napari_medseg.types import GRID_TOLERANCE

    base = Geometry((1.0, 0.9, 0.9), (-90.0, 120.0, 30.0))
    assert base.matches(Geometry((1.0, 0.9, 0.9 * (1 + GRID_TOLERANCE / 2)), (-90.0, 120.0 + 0.005, 30.0)))
    flipped = ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0))
    other = Geometry((1.0, 0.9, 1.2), (-90.0, 121.0, 30.0), flipped)
    problems = base.differences(other)
    assert [p.split(" ")[0] for p in problems] == ["spacing", "origin", "direction"]
    assert "[1.0, 0.9, 0.9] vs [1.0, 0.9, 1.2]" in problems[0]
    assert not base.matches(Geometry((1.0, 0.9, 0.9), (-90.0, 120.0 + 1e-6, 30.0)), tolerance=1e-9)
