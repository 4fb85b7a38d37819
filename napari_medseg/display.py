"""How a scan (its display window) and float maps (uncertainty, Grad-CAM, probabilities)
are shown: one rule for the viewer's layers, the demo and the summary figure (numpy only).

A map is read against the anatomy it covers, so its display range comes from its own
values inside the scan's foreground (robust percentiles), not from the whole grid (mostly
air, where maps are zero) nor from fixed bounds. Low values are drawn transparent, so the
grey anatomy shows through and only what stands out is coloured.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .io.scan_checks import guess_modality, intensity_range, sample_values
from .preprocess.intensity import FOREGROUND_FRACTION

__all__ = ["MAP_COLORMAPS", "MAP_PERCENTILES", "MapKind", "map_contrast_limits", "scan_foreground", "transparent_ramp"]

MapKind = Literal["uncertainty", "gradcam", "probability"]
# Perceptually uniform, readable in grey print, distinct from the label colours and from each other.
MAP_COLORMAPS: dict[str, str] = {"uncertainty": "inferno", "gradcam": "turbo", "probability": "viridis"}
# The display range: these percentiles of the map inside the scan's foreground.
MAP_PERCENTILES = (1.0, 99.5)
_SAMPLES = 2_000_000  # voxels used for the percentiles (a regular subsample of larger maps)


def scan_foreground(image: np.ndarray) -> np.ndarray:
    """Voxels of a scan above its background: more than ``FOREGROUND_FRACTION`` of the way
    from its minimum to its maximum (the normalisation's rule, measured from the minimum so
    CT air at -1000 HU is background too).

    Args:
        image: (z, y, x) scan, any real dtype; NaN voxels are background.

    Returns:
        (z, y, x) bool mask; all False for a constant or empty scan.
    """
    data = np.asarray(image)
    if data.size == 0:
        return np.zeros(data.shape, dtype=bool)
    finite = data[np.isfinite(data)] if np.issubdtype(data.dtype, np.floating) else data
    if finite.size == 0:
        return np.zeros(data.shape, dtype=bool)
    low, high = float(finite.min()), float(finite.max())
    if high <= low:
        return np.zeros(data.shape, dtype=bool)
    return data > low + FOREGROUND_FRACTION * (high - low)


def map_contrast_limits(
    values: np.ndarray, foreground: np.ndarray | None = None, *, percentiles: tuple[float, float] = MAP_PERCENTILES
) -> tuple[float, float]:
    """Display range of a float map: ``percentiles`` of its finite values inside ``foreground``.

    Args:
        values: the map, any shape (e.g. (z, y, x) nats for uncertainty).
        foreground: bool mask of ``values``' shape (e.g. :func:`scan_foreground` of the scan);
            None, or a mask with no voxel, takes every voxel.
        percentiles: (low, high) in [0, 100], low < high.

    Returns:
        (low, high) with low < high, in the map's units. A map constant inside the
        foreground gets (value, value + 1), or (value - 1, value) at the top of [0, 1].

    Raises:
        ValueError: ``percentiles`` out of order or range, or ``foreground``'s shape differs.
    """
    low_q, high_q = (float(p) for p in percentiles)
    if not 0.0 <= low_q < high_q <= 100.0:
        raise ValueError(f"percentiles {percentiles} must satisfy 0 <= low < high <= 100")
    data = np.asarray(values)
    if foreground is not None and np.shape(foreground) != data.shape:
        raise ValueError(f"foreground shape {np.shape(foreground)} differs from the map's {data.shape}")
    flat = data.reshape(-1)
    step = max(1, flat.size // _SAMPLES)
    sample = flat[::step]
    if foreground is not None:
        inside = sample[np.asarray(foreground).reshape(-1)[::step]]
        sample = inside if inside.size else sample
    sample = sample[np.isfinite(sample)].astype(np.float64)
    if sample.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(sample, [low_q, high_q]))
    if high <= low:  # more than (high_q - low_q)% of the voxels share one value
        high = float(sample.max())
        if high <= low:
            return (low - 1.0, low) if low == 1.0 else (low, low + 1.0)
    return low, high


def transparent_ramp(rgba: np.ndarray, *, until: float = 0.25) -> np.ndarray:
    """A colormap's (N, 4) RGBA table with opacity rising from 0 at its low end to 1 at
    the fraction ``until`` of the range, so that low map values let the anatomy show.

    Returns:
        A new (N, 4) float array in [0, 1].
    """
    table = np.array(rgba, dtype=np.float64, copy=True)
    if table.ndim != 2 or table.shape[1] != 4:
        raise ValueError(f"colour table shape {table.shape} must be (N, 4)")
    if not 0.0 < until <= 1.0:
        raise ValueError(f"until {until} must lie in (0, 1]")
    position = np.linspace(0.0, 1.0, len(table))
    table[:, 3] *= np.clip(position / until, 0.0, 1.0)
    return table


def contrast_limits(volume: Volume) -> tuple[float, float]:
    """Display window: CT soft tissue (W 400, L 40), else 0.5–99.5 percentiles of the foreground."""
    low, high = intensity_range(volume)
    if guess_modality(volume).rstrip("?") == "CT":
        return (-160.0, 240.0)
    sample = sample_values(volume.array).astype(np.float64)
    foreground = sample[sample > low]
    if foreground.size > 0.05 * sample.size:  # ignore the empty background around the head
        sample = foreground
    lo, hi = np.percentile(sample, [0.5, 99.5])
    if hi <= lo:
        lo, hi = low, high if high > low else low + 1.0
    return float(lo), float(hi)
