"""From a scan to the model's input grid and back: reorient, resample, normalise.

``prepare`` maps a :class:`Volume` into the model's canonical orientation (exact axis
permutation and flips) and, when its spacing differs from the model's by more than
``SPACING_TOLERANCE``, resamples it (linear) to the model's spacing. ``restore`` maps
per-class probabilities back onto the input's own grid: linear resampling when a
resampling happened, otherwise the exact inverse permutation, so labels agree voxel for
voxel with the model's output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..types import Geometry, Volume
from .intensity import normalize_intensity
from .orientation import Reorientation, reorient

SPACING_TOLERANCE = 0.1
# The resampled float32 image and SimpleITK's copy of it exist at the same time.
RESAMPLED_BYTES_PER_VOXEL = 8


@dataclass
class Prepared:
    """A volume on the model's grid, with what is needed to go back."""

    image: np.ndarray  # (z, y, x) float32, normalised, canonical orientation, model spacing
    geometry: Geometry  # of ``image``
    reorientation: Reorientation
    canonical_geometry: Geometry  # reoriented input grid, before resampling
    canonical_shape: tuple[int, int, int]
    input_shape: tuple[int, int, int]
    resampled: bool


def prepare(volume: Volume, *, orientation: str, spacing: tuple[float, float, float], normalize: bool = True) -> Prepared:
    """Map ``volume`` (3D) onto the model's grid; see the module docstring."""
    if volume.array.ndim != 3:
        raise ValueError(f"volume of shape {volume.array.shape} must be 3D (z, y, x)")
    canonical, transform = reorient(volume, orientation)
    target = np.asarray(spacing, dtype=float)
    current = np.asarray(canonical.spacing, dtype=float)
    resampled = bool(np.any(np.abs(current - target) / target > SPACING_TOLERANCE))
    image = np.ascontiguousarray(canonical.array, dtype=np.float32)
    geometry = canonical.geometry
    if resampled:
        shape = tuple(max(1, int(round(n * c / t))) for n, c, t in zip(canonical.shape, current, target))
        check_resampling(volume, canonical.shape, tuple(current), tuple(target), shape)
        geometry = Geometry(tuple(target), canonical.geometry.origin, canonical.geometry.direction)
        image = resample_array(image, canonical.geometry, geometry, shape, linear=True)
    if normalize:
        image = normalize_intensity(image)
    return Prepared(
        image=image,
        geometry=geometry,
        reorientation=transform,
        canonical_geometry=canonical.geometry,
        canonical_shape=canonical.shape,
        input_shape=volume.shape,
        resampled=resampled,
    )


def check_resampling(
    volume: Volume,
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    target_spacing: tuple[float, ...],
    target_shape: tuple[int, ...],
) -> None:
    """Refuse, before it is allocated, a model grid that does not fit in memory.

    A 64^3 scan of 40 mm voxels becomes 2560^3 voxels at 1 mm: the size of the resampled
    grid is bounded by nothing but the spacings, so it goes through the same gate as the
    arrays a file declares (:func:`~napari_medseg.io.limits.check_allocation`).

    Raises:
        ValueError: naming the scan, both grids and the bytes needed.
    """
    from ..io.limits import AllocationError, check_allocation

    source = volume.meta.get("source") or "the scan"
    try:
        check_allocation("resampled volume", target_shape, RESAMPLED_BYTES_PER_VOXEL, source)
    except AllocationError as exc:
        raise ValueError(
            f"{source}: cannot resample its {_grid(shape, spacing)} to the model's {_fmt(target_spacing)} mm "
            f"grid: {exc.problem.split('; ')[0]}; resample the scan nearer the model's spacing first, or use a "
            "model made for it"
        ) from None


def _grid(shape, spacing) -> str:
    return f"{'x'.join(str(int(n)) for n in shape)} voxels of {_fmt(spacing)} mm"


def _fmt(values) -> str:
    return "x".join(f"{float(v):g}" for v in values)


def restore(probabilities: np.ndarray, prepared: Prepared) -> np.ndarray:
    """(K, z, y, x) probabilities on the model grid -> (z, y, x, K) float32 on the input grid."""
    k = probabilities.shape[0]
    if prepared.resampled:
        back = np.empty((k, *prepared.canonical_shape), dtype=np.float32)
        for c in range(k):  # one class at a time keeps memory bounded
            back[c] = resample_array(
                probabilities[c], prepared.geometry, prepared.canonical_geometry, prepared.canonical_shape, linear=True
            )
        back = np.clip(back, 0, None)
        back /= np.maximum(back.sum(axis=0, keepdims=True), 1e-6)
    else:
        back = probabilities
    restored = prepared.reorientation.invert(back, channel_axis=0)
    return np.ascontiguousarray(np.moveaxis(restored, 0, -1), dtype=np.float32)


def resample_array(
    array: np.ndarray, source: Geometry, target: Geometry, shape: tuple[int, int, int], *, linear: bool
) -> np.ndarray:
    """Resample a (z, y, x) array from ``source`` to the ``target`` grid of ``shape``."""
    import SimpleITK as sitk

    from ..io._sitk import apply_geometry

    image = apply_geometry(sitk.GetImageFromArray(np.ascontiguousarray(array)), source)
    reference = apply_geometry(sitk.Image([int(n) for n in shape[::-1]], sitk.sitkUInt8), target)
    interpolator = sitk.sitkLinear if linear else sitk.sitkNearestNeighbor
    out = sitk.Resample(image, reference, sitk.Transform(), interpolator, 0.0, image.GetPixelID())
    return sitk.GetArrayFromImage(out)
