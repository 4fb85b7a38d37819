"""Compare our reading with SimpleITK's own reading of the same file, voxel by voxel."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from napari_medseg.types import Volume


def sample_indices(shape, n: int = 12, seed: int = 0) -> np.ndarray:
    """Corners plus random interior (z, y, x) indices."""
    rng = np.random.default_rng(seed)
    corners = np.array([[z, y, x] for z in (0, shape[0] - 1) for y in (0, shape[1] - 1) for x in (0, shape[2] - 1)])
    interior = np.stack([rng.integers(0, s, n) for s in shape], axis=1)
    return np.concatenate([corners, interior])


def assert_matches_sitk(volume: Volume, image: sitk.Image, check_geometry: bool = True) -> None:
    """Values, and (optionally) physical coordinates, of sample voxels agree with SimpleITK."""
    reference = sitk.GetArrayFromImage(image)
    if reference.ndim == 2:
        reference = reference[None]
    assert volume.shape == reference.shape[:3]
    for index in sample_indices(volume.shape):
        z, y, x = (int(v) for v in index)
        assert volume.array[z, y, x] == reference[z, y, x]
        if check_geometry:
            expected = np.array(image.TransformIndexToPhysicalPoint((x, y, z))[:3])[::-1]
            np.testing.assert_allclose(volume.geometry.index_to_physical(index)[0], expected, atol=1e-6)
