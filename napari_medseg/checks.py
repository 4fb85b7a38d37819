"""Sanity checks on a volume: warnings a reader of the scan should see, display windows."""

from __future__ import annotations

from typing import Any

import numpy as np

from .types import Volume

ANISOTROPY_LIMIT = 3.0
_SUBSAMPLE = 2_000_000  # voxels used for percentile estimates


def _sample(array: np.ndarray) -> np.ndarray:
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
    sample = _sample(volume.array)
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
        if low < 0 and _negative_fraction(volume) > 0.01:
            notes.append(f"MR with negative intensities (minimum {low:g}): unusual for magnitude images")
    if low == high:
        notes.append(f"the image is constant ({low:g})")
    return notes


def model_warnings(volume: Volume, config: Any) -> list[str]:
    """Warnings about giving ``volume`` to a model with ``config`` (modality, spacing,
    intensities), for the report, the log and the viewer's notifications.

    Args:
        volume: the scan as read (its ``modality`` from the file, "" if none).
        config: a :class:`~napari_medseg.config.ModelConfig` (``modality``,
            ``target_spacing`` in mm, ``spatial_dims``).
    """
    notes = []
    expected = (getattr(config, "modality", "") or "").upper()
    stated = (volume.modality or "").upper()
    guessed = guess_modality(volume).rstrip("?").upper()
    if expected and stated not in ("", "UNKNOWN") and stated != expected:
        notes.append(f"the scan's modality is {stated} but the model was trained on {expected}")
    elif expected and stated in ("", "UNKNOWN") and guessed in ("CT", "MR") and guessed != expected:
        low, high = intensity_range(volume)
        notes.append(
            f"intensities {low:g}..{high:g} look like {guessed}, but the model was trained on {expected}"
        )
    elif expected == "MR" and _negative_fraction(volume) > 0.05:
        notes.append(f"{_negative_fraction(volume):.0%} of the voxels are negative: implausible for an MR magnitude image")
    target = np.asarray(getattr(config, "target_spacing", ()) or (), dtype=float)
    spacing = np.asarray(volume.spacing, dtype=float)
    if target.size == 3 and min(volume.shape) > 1:
        coarse = float(spacing.max() / target.max())
        if coarse > ANISOTROPY_LIMIT - 0.5:
            notes.append(
                f"voxels of {tuple(round(float(v), 2) for v in spacing)} mm are {coarse:.1f}x coarser than the "
                f"model's {tuple(float(v) for v in target)} mm along one axis: the scan is interpolated, "
                "thin structures and small volumes are unreliable"
            )
    return notes


def _negative_fraction(volume: Volume) -> float:
    return float(np.mean(_sample(volume.array) < 0))


def contrast_limits(volume: Volume) -> tuple[float, float]:
    """Display window: CT soft tissue (W 400, L 40), else 0.5–99.5 percentiles of the foreground."""
    low, high = intensity_range(volume)
    if guess_modality(volume).rstrip("?") == "CT":
        return (-160.0, 240.0)
    sample = _sample(volume.array).astype(np.float64)
    foreground = sample[sample > low]
    if foreground.size > 0.05 * sample.size:  # ignore the empty background around the head
        sample = foreground
    lo, hi = np.percentile(sample, [0.5, 99.5])
    if hi <= lo:
        lo, hi = low, high if high > low else low + 1.0
    return float(lo), float(hi)
