"""Sanity checks on a scan as read: its intensity range, a modality guess, and the warnings
a reader of the scan should see (spacing, orientation, intensities)."""

from __future__ import annotations

import numpy as np

from ..types import Volume

ANISOTROPY_LIMIT = 3.0
_SUBSAMPLE = 2_000_000  # voxels used for percentile estimates


def sample_values(array: np.ndarray) -> np.ndarray:
    flat = array.reshape(-1) if array.ndim == 3 else array[..., 0].reshape(-1)
    step = max(1, flat.size // _SUBSAMPLE)
    return flat[::step]


def intensity_range(volume: Volume) -> tuple[float, float]:
    """Minimum and maximum voxel value."""
    return float(volume.array.min()), float(volume.array.max())


def guess_modality(volume: Volume) -> str:
    """The file's modality if it names one, else a guess from intensities ("CT?" / "MR?")."""
    if volume.modality not in ("", "unknown"):
        return volume.modality
    low, high = intensity_range(volume)
    sample = sample_values(volume.array)
    if low <= -900 and high >= 200 and np.mean(sample < -500) > 0.05:
        return "CT?"
    if low >= 0:
        return "MR?"
    return "unknown"


def sanity_warnings(volume: Volume) -> list[str]:
    """Human-readable warnings about spacing, orientation and intensities."""
    notes = list(volume.warnings)
    geometry = volume.geometry
    if geometry.anisotropy > ANISOTROPY_LIMIT and min(volume.shape) > 1:
        notes.append(
            f"very anisotropic spacing {tuple(round(s, 3) for s in geometry.spacing)} mm "
            f"(ratio {geometry.anisotropy:.1f}); 3D results along the coarse axis are unreliable"
        )
    if geometry.is_oblique:
        notes.append("oblique orientation: the voxel axes are not aligned with the patient axes")
    if min(volume.shape) == 1:
        notes.append(f"a single slice ({volume.shape}); 3D measurements are not meaningful")
    low, high = intensity_range(volume)
    modality = volume.modality.upper()
    if modality == "CT":
        if low > -500:
            notes.append(f"CT without air values (minimum {low:g} HU): rescale may be missing")
        if high > 40000 or low < -3000:
            notes.append(f"CT values {low:g}..{high:g} lie outside the Hounsfield range")
    elif modality == "MR":
        if low < 0 and negative_fraction(volume) > 0.01:
            notes.append(f"MR with negative intensities (minimum {low:g}): unusual for magnitude images")
    if low == high:
        notes.append(f"the image is constant ({low:g})")
    return notes


def negative_fraction(volume: Volume) -> float:
    return float(np.mean(sample_values(volume.array) < 0))
