"""Intensity normalisation, the same rule at training and inference time.

Voxels above 2% of the maximum are the foreground; the 99.5th percentile of the
foreground maps to 1. (``napari_medseg.training.augment.normalize_torch`` applies the
same rule to training samples.)
"""

from __future__ import annotations

import numpy as np

FOREGROUND_FRACTION = 0.02
PERCENTILE = 99.5
_SAMPLES = 2_000_000


def normalize_intensity(
    array: np.ndarray, foreground_fraction: float = FOREGROUND_FRACTION, percentile: float = PERCENTILE
) -> np.ndarray:
    """(z, y, x) any dtype -> float32 scaled so the foreground's ``percentile`` is 1.

    Negative values (CT air, filtered MR) are kept; the threshold is relative to the maximum.
    """
    data = np.asarray(array, dtype=np.float32)
    peak = float(data.max()) if data.size else 0.0
    if peak <= 0:
        return data.copy()
    flat = data.reshape(-1)
    step = max(1, flat.size // _SAMPLES)
    sample = flat[::step]
    foreground = sample[sample > foreground_fraction * peak]
    scale = float(np.percentile(foreground, percentile)) if foreground.size else peak
    return data / max(scale, 1e-6)
