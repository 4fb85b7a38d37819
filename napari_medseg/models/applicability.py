"""Whether a model applies to a scan: modality and resolution against what it was trained on."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..io.scan_checks import ANISOTROPY_LIMIT, guess_modality, intensity_range, negative_fraction
from ..types import Volume


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
    elif expected == "MR" and negative_fraction(volume) > 0.05:
        notes.append(f"{negative_fraction(volume):.0%} of the voxels are negative: implausible for an MR magnitude image")
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
