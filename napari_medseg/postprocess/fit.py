"""Deciding a bundle's post-processing for one scan, then applying it block by block."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..io.limits import release_pages
from ..types import Geometry
from .brain_mask import atlas_bound, brain_mask
from .mixture import TissueMixture, apply_mixture, fit_mixture, network_override
from .morphology import foreground_mask, largest_component
from .settings import PostprocessSettings

logger = logging.getLogger(__name__)

__all__ = ["PostprocessFit", "apply_in_slabs", "fit_postprocess", "mixture_region", "postprocess"]


@dataclass
class PostprocessFit:
    """What the post-processing decided for one scan, reusable on any block.

    Attributes:
        mask: (z, y, x) bool brain mask on the model grid, or None (no mask step).
        mixture: the per-scan tissue mixture, or None (no mixture step, or an empty mask).
        details: what was applied (brain mask source, atlas fit), JSON-ready.
        em: whether the settings ask for the mixture step (without a mask step, its
            region is each prediction's own foreground).
        override: the network's confidence above which its class replaces the
            mixture's, or None.
        keep_background: the mixture works only where the network found tissue.
        groups: (K,) int tissue group of each class, or None (see :func:`fit_mixture`).
    """

    mask: np.ndarray | None
    mixture: TissueMixture | None
    details: dict[str, Any]
    em: bool = False
    override: float | None = None
    keep_background: bool = False
    groups: np.ndarray | None = None

    def apply(self, image: np.ndarray, probabilities: np.ndarray, region: tuple[slice, ...] | None = None) -> np.ndarray:
        """Post-processed (K, *S) probabilities for the block ``region`` of the model grid
        (the whole grid when None): ``image`` (*S) and ``probabilities`` (K, *S) are that
        block. Per voxel, so blocks can be processed one at a time."""
        if self.mask is None and not self.em:
            return probabilities
        fixed = None if self.mask is None else self.mask[region or ...]
        if self.em:
            inside = mixture_region(fixed, probabilities, self.keep_background)
            out = apply_mixture(self.mixture, image, probabilities, inside, self.groups)
            if self.override is not None and self.mixture is not None:
                out = network_override(out, probabilities, inside, self.override)
            return out
        out = probabilities.copy()
        _background_outside(fixed, out)
        return out


def fit_postprocess(
    image: np.ndarray,
    probabilities: np.ndarray,
    settings: PostprocessSettings,
    *,
    geometry: Geometry,
    brain: np.ndarray | None = None,
) -> PostprocessFit:
    """Decide the post-processing for one scan.

    Args:
        image: (z, y, x) float32 normalised intensities on the model grid.
        probabilities: (K, z, y, x) the network's plain prediction on that grid.
        settings: the bundle's settings (:meth:`PostprocessSettings.from_config`).
        geometry: the model grid's geometry (spacing in mm; the atlas fit needs the rest).
        brain: (z, y, x) bool brain mask found before (the model's brain locator, see
            :mod:`napari_medseg.inference.locator`); it replaces the brain mask step.
    """
    details: dict[str, Any] = {}
    mask = brain
    if settings.brain_mask is not None and mask is None:
        step = settings.brain_mask
        allowed = None if step.atlas_margin_mm is None else atlas_bound(geometry, step.atlas_margin_mm, details)
        mask, stripped = brain_mask(
            image, probabilities, spacing=geometry.spacing, closing_voxels=step.closing_voxels,
            stripped_support_fraction=step.stripped_support_fraction, opening_mm=step.opening_mm,
            allowed_region=allowed,
        )  # fmt: skip
        details["brain_mask"] = "non-zero region (brain-extracted input)" if stripped else "network"
        logger.info("brain mask of %d voxels (%s)", int(mask.sum()), details["brain_mask"])
    elif settings.largest_component and mask is None:
        mask = largest_component(foreground_mask(probabilities))
    step = settings.mixture
    if step is None:
        return PostprocessFit(mask=mask, mixture=None, details=details)
    groups = None if step.class_groups is None else np.asarray(step.class_groups, dtype=np.int64)
    region = mixture_region(mask, probabilities, step.keep_background)
    mixture = fit_mixture(
        image, probabilities, region, iterations=step.iterations, prior_weight=step.prior_weight, groups=groups
    )
    if mixture is not None:
        details["mixture"] = {"means": np.round(mixture.means, 4).tolist(), "prior_weight": mixture.prior_weight}
        if step.keep_background:
            details["mixture"]["region"] = "where the network found tissue"
    if step.network_override is not None:
        details["network_override"] = step.network_override
    return PostprocessFit(
        mask=mask, mixture=mixture, details=details, em=True, override=step.network_override,
        keep_background=step.keep_background, groups=groups,
    )  # fmt: skip


def mixture_region(mask: np.ndarray | None, probabilities: np.ndarray, keep_background: bool) -> np.ndarray:
    """Where the mixture relabels (*S) bool, for (K, *S) ``probabilities`` and a fixed (*S)
    ``mask`` or None: the mask, or the network's foreground within it when
    ``keep_background`` or when there is no fixed mask (each prediction's own foreground)."""
    if mask is not None and not keep_background:
        return mask
    found = foreground_mask(probabilities)
    return found if mask is None else found & mask


def postprocess(
    image: np.ndarray,
    probabilities: np.ndarray,
    settings: PostprocessSettings,
    *,
    geometry: Geometry,
    brain: np.ndarray | None = None,
    details: dict[str, Any] | None = None,
) -> np.ndarray:
    """:func:`fit_postprocess` applied to the whole grid; (K, z, y, x) probabilities.

    ``details``, if given, receives what was applied: the brain mask's source and the
    atlas fit (scale, correlation, or why it was rejected).
    """
    if not settings and brain is None:
        return probabilities
    fit = fit_postprocess(image, probabilities, settings, geometry=geometry, brain=brain)
    if details is not None:
        details.update(fit.details)
    return fit.apply(image, probabilities)


def apply_in_slabs(fit: PostprocessFit, image: np.ndarray, probabilities: np.ndarray, slab: int = 16) -> None:
    """:meth:`PostprocessFit.apply` to ``slab`` model-grid slices at a time, written back into
    ``probabilities`` (K, z, y, x): its working arrays stay slab-sized, not volume-sized.

    A mask alone (the brain locator's, no mixture) is applied in place, and only where it
    changes a value: the slices the network never ran on (already certain background,
    their classes beyond the first still the zeros of a fresh array) are read, not
    rewritten.
    """
    if fit.mask is None and not fit.em:
        return
    for start in range(0, image.shape[0], slab):
        region = (slice(start, start + slab), slice(None), slice(None))
        block = probabilities[(slice(None), *region)]
        if fit.mask is not None and not fit.em:
            _background_outside(fit.mask[region], block)
        else:
            block[...] = fit.apply(image[region], block, region)
        release_pages(probabilities)


def _background_outside(inside: np.ndarray, block: np.ndarray) -> None:
    """Make the voxels of (K, *S) ``block`` outside the (*S) bool ``inside`` certain
    background, in place: class 0 is set to 1 and the others to 0 where they differ."""
    outside = ~inside
    if not outside.any():
        return
    for k, values in enumerate(block):
        wrong = outside & (values != (1.0 if k == 0 else 0.0))
        if wrong.any():
            values[wrong] = 1.0 if k == 0 else 0.0
