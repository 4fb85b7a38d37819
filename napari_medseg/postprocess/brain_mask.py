"""Step 1 of post-processing: the brain mask on the model grid.

The brain is one connected piece: the largest 3D connected component of the predicted
foreground, restricted to where a registered atlas puts the brain (see
:mod:`napari_medseg.postprocess.atlas`), opened to cut thin bridges to the scalp and the
neck, closed (sulcal gaps at the surface) and hole-filled. When the scan is already
brain-extracted (zero background, and the network finds tissue in most of the non-zero
region), the non-zero region itself is the brain mask: nothing outside it can be brain and
everything inside it was kept by the extraction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage

from ..types import Geometry
from .atlas import atlas_region, fit_brain_atlas
from .morphology import ball, fill_holes, foreground_mask, largest_component, opening

logger = logging.getLogger(__name__)

#: A scan can be brain-extracted only when at least this share of its grid is exactly zero
#: (also the locator's first test, :func:`~napari_medseg.inference.locator.looks_brain_extracted`).
ZERO_BACKGROUND_FRACTION = 0.2


def brain_mask(
    image: np.ndarray,
    probabilities: np.ndarray,
    *,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    closing_voxels: int = 3,
    stripped_support_fraction: float = 0.6,
    opening_mm: float = 0.0,
    allowed_region: Callable[[np.ndarray], np.ndarray | None] | None = None,
) -> tuple[np.ndarray, bool]:
    """Boolean (z, y, x) brain mask on the model grid and whether the scan looked brain-extracted.

    Args:
        image: (z, y, x) normalised intensities (exact zeros where a brain extraction
            removed tissue).
        probabilities: (K, z, y, x) network probabilities, class 0 background.
        spacing: (z, y, x) voxel size in mm.
        closing_voxels: radius of the morphological closing of the network's mask.
        stripped_support_fraction: the scan counts as brain-extracted when the network's
            foreground covers at least this fraction of the non-zero region and at least
            ``ZERO_BACKGROUND_FRACTION`` of the volume is exactly zero.
        opening_mm: radius of the opening that cuts thin bridges to non-brain tissue.
        allowed_region: for whole-head scans only, called with the network's tissue
            probability (z, y, x); returns where the brain may be (e.g. a registered
            atlas), or None to keep everything.
    """
    foreground = foreground_mask(probabilities)
    support = image != 0
    if (~support).mean() >= ZERO_BACKGROUND_FRACTION and support.any():
        support = largest_component(support)
        if (foreground & support).sum() >= stripped_support_fraction * support.sum():
            return support, True
    region = None
    if allowed_region is not None:
        region = allowed_region(1.0 - probabilities[0])
        if region is not None:
            foreground &= region
    mask = opening(largest_component(foreground), opening_mm, spacing)
    if closing_voxels > 0 and mask.any():
        pad = closing_voxels + 1
        closed = ndimage.binary_closing(np.pad(mask, pad), structure=ball(closing_voxels))
        mask = fill_holes(closed[pad:-pad, pad:-pad, pad:-pad])
        if region is not None:
            mask &= region
    return mask, False


def atlas_bound(geometry: Geometry, margin_mm: float, details: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray | None]:
    """``allowed_region`` for :func:`brain_mask`: fits the MNI atlas to the network's tissue
    probability and returns the region within ``margin_mm`` of it, or None (logged, and
    recorded in ``details["atlas"]``) when the fit is rejected."""

    def region(tissue: np.ndarray) -> np.ndarray | None:
        fit = fit_brain_atlas(tissue, geometry)
        details["atlas"] = {"scale": round(fit.scale, 4), "correlation": round(fit.correlation, 4)}
        if not fit.accepted:
            details["atlas"]["rejected"] = fit.reason
            logger.warning("brain atlas not used: %s", fit.reason)
            return None
        return atlas_region(fit, geometry.spacing, margin_mm)

    return region
