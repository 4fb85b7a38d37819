"""prepare/restore: model grid and back, with and without resampling; normalisation."""

from __future__ import annotations

import numpy as np

from napari_medseg.preprocess import normalize_intensity, prepare, restore
from napari_medseg.types import Geometry, Volume


def test_normalisation_maps_foreground_percentile_to_one():
    array = np.zeros((10, 10, 10), np.float32)
    array[2:8, 2:8, 2:8] = np.linspace(100, 200, 216).reshape(6, 6, 6)
    out = normalize_intensity(array)
    foreground = out[array > 0]
    assert abs(np.percentile(foreground, 99.5) - 1.0) < 1e-3
    assert out.dtype == np.float32 and array.max() == 200  # input untouched


def test_restore_is_exact_without_resampling():
    direction = np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], dtype=float)
    volume = Volume(np.random.default_rng(0).random((6, 7, 8)).astype(np.float32), Geometry((1, 1, 1), (0, 0, 0), direction))
    prepared = prepare(volume, orientation="RAS", spacing=(1.0, 1.0, 1.0))
    assert not prepared.resampled
    probabilities = np.stack([prepared.image, 1 - prepared.image])
    back = restore(probabilities, prepared)
    assert back.shape == (6, 7, 8, 2)
    np.testing.assert_allclose(back[..., 0], normalize_intensity(volume.array), rtol=1e-6)


def test_resampling_to_model_spacing_and_back():
    array = np.zeros((20, 24, 28), np.float32)
    array[5:15, 6:18, 7:21] = 1.0
    volume = Volume(array, Geometry((2.0, 2.0, 2.0), (0, 0, 0)))
    prepared = prepare(volume, orientation="LPS", spacing=(1.0, 1.0, 1.0), normalize=False)
    assert prepared.resampled and prepared.image.shape == (40, 48, 56)
    probabilities = np.stack([1 - prepared.image, prepared.image])
    back = restore(probabilities, prepared)
    assert back.shape == (20, 24, 28, 2)
    np.testing.assert_allclose(back.sum(axis=-1), 1.0, atol=1e-5)
    labels = back.argmax(axis=-1)
    assert (labels == (array > 0.5)).mean() > 0.98
