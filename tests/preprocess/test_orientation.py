"""Exact reorientation: same voxels at the same physical positions, invertible."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.preprocess import orientation_code, reorient
from napari_medseg.types import Geometry, Volume


def _volume(direction) -> Volume:
    array = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    return Volume(array, Geometry((2.0, 0.5, 0.8), (10.0, -20.0, 30.0), direction))


DIRECTIONS = [
    np.eye(3),
    np.diag([1.0, -1.0, -1.0]),
    np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], dtype=float),
    np.array([[0, -1, 0], [0, 0, 1], [-1, 0, 0]], dtype=float),
]


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("code", ["RAS", "LPS", "PIR", "ASL"])
def test_voxels_keep_their_physical_positions(direction, code):
    volume = _volume(direction)
    canonical, transform = reorient(volume, code)
    assert orientation_code(canonical.geometry) == code
    rng = np.random.default_rng(1)
    for index in rng.integers(0, canonical.shape, size=(10, 3)):
        point = canonical.geometry.index_to_physical(index)
        source = np.round(volume.geometry.physical_to_index(point)[0]).astype(int)
        assert canonical.array[tuple(index)] == volume.array[tuple(source)]
    np.testing.assert_array_equal(transform.invert(canonical.array), volume.array)


def test_channels_follow_the_spatial_axes():
    volume = _volume(DIRECTIONS[2])
    canonical, transform = reorient(volume, "RAS")
    stacked = np.stack([canonical.array, 2 * canonical.array])
    back = transform.invert(stacked, channel_axis=0)
    np.testing.assert_array_equal(back[1], 2 * volume.array)


def test_oblique_direction_maps_to_nearest_code(shared_data):
    from napari_medseg.io import read_volume

    mprage = read_volume(shared_data / "full-head-mprage")
    assert orientation_code(mprage.geometry) == "PIR"
    canonical, _ = reorient(mprage, "RAS")
    assert canonical.shape == (256, 256, 176)
    assert canonical.geometry.is_oblique  # residual obliquity is kept, not resampled away


def test_bad_code_is_named():
    with pytest.raises(ValueError, match="'RAX' must be 3 letters"):
        reorient(_volume(np.eye(3)), "RAX")
    with pytest.raises(ValueError, match="repeats an axis"):
        reorient(_volume(np.eye(3)), "RRS")
