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
    array: np.ndarray,
    foreground_fraction: float = FOREGROUND_FRACTION,
    percentile: float = PERCENTILE,
    *,
    in_place: bool = False,
) -> np.ndarray:
    """(z, y, x) any dtype -> float32 scaled so the foreground's ``percentile`` is 1.

    Negative values (CT air, filtered MR) are kept; the threshold is relative to the maximum.
    With ``in_place``, a float32 ``array`` is scaled in place and returned (the same
    values as a new array, without a second float32 volume); other dtypes are converted
    to a new array either way.
    """
    data = np.asarray(array, dtype=np.float32)
    # A converted copy, or an array the caller gave up, is scaled in place.
    owned = in_place or not (isinstance(array, np.ndarray) and np.may_share_memory(data, array))
    peak = float(data.max()) if data.size else 0.0
    if peak <= 0:
        return data if owned else data.copy()
    flat = data.reshape(-1)
    step = max(1, flat.size // _SAMPLES)
    sample = flat[::step]
    foreground = sample[sample > foreground_fraction * peak]
    scale = float(np.percentile(foreground, percentile)) if foreground.size else peak
    if not owned:
        return data / max(scale, 1e-6)
    data /= max(scale, 1e-6)  # float32 / float is float32 either way: the same values
    return data
