"""Normalisation in place gives the very values of a new array and never touches an
array it was not given to change."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.preprocess import normalize_intensity, prepare
from napari_medseg.types import Geometry, Volume


def _reference(array: np.ndarray) -> np.ndarray:
    """The rule as it was: a float32 copy divided into a new array."""
    data = np.asarray(array, dtype=np.float32)
    peak = float(data.max())
    if peak <= 0:
        return data.copy()
    sample = data.reshape(-1)[:: max(1, data.size // 2_000_000)]
    foreground = sample[sample > 0.02 * peak]
    return data / max(float(np.percentile(foreground, 99.5)), 1e-6)


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.float64])
def test_in_place_and_new_arrays_hold_the_same_values(dtype):
    rng = np.random.default_rng(0)
    values = rng.integers(0, 255, (7, 9, 11)) if dtype == np.uint8 else rng.normal(300, 200, (7, 9, 11))
    array = values.astype(dtype)
    original = array.copy()
    fresh = normalize_intensity(array)
    np.testing.assert_array_equal(array, original)  # the caller's array is untouched
    assert fresh.dtype == np.float32
    assert fresh.tobytes() == _reference(array).tobytes()
    scaled = array.astype(np.float32)
    result = normalize_intensity(scaled, in_place=True)
    assert result is scaled and result.tobytes() == fresh.tobytes()


def test_a_float32_memmap_is_not_scaled_in_place(tmp_path):
    on_disk = np.memmap(tmp_path / "scan.f32", dtype=np.float32, mode="w+", shape=(4, 5, 6))
    on_disk[...] = np.arange(on_disk.size, dtype=np.float32).reshape(on_disk.shape)
    normalize_intensity(on_disk)
    np.testing.assert_array_equal(on_disk, np.arange(on_disk.size, dtype=np.float32).reshape(on_disk.shape))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 1.0, 1.0)])
def test_prepare_leaves_a_float32_scan_in_model_layout_untouched(spacing):
    array = np.random.default_rng(1).random((6, 7, 8)).astype(np.float32) * 100
    original = array.copy()
    volume = Volume(array=array, geometry=Geometry(spacing, (0.0, 0.0, 0.0)))
    prepared = prepare(volume, orientation="LPS", spacing=(1.0, 1.0, 1.0))
    np.testing.assert_array_equal(array, original)
    if spacing == (1.0, 1.0, 1.0):  # no resampling: exactly the normalised scan
        assert prepared.image.tobytes() == _reference(array).tobytes()
