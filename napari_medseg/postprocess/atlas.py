"""Registering the shipped MNI brain mask to a whole-head scan.

A network trained on one brain-extracted template labels parts of the face and neck as
tissue, and on a blurry scan they join the brain thickly through the brainstem, so no
morphological opening separates them. Where the brain is, roughly, is a question an
atlas answers well: the MNI brain mask is fitted to the network's own tissue probability
(not to intensities, so it works for any contrast) by a similarity transform (rotation,
translation, one scale), the way SPM and FSL start from an affine fit to a template.
The fitted mask, widened by a margin, bounds where tissue may be; the network still
draws the brain's outline inside it.

Only 7 parameters are fitted: a full affine transform stretches the atlas over the
network's neck false positives (measured: a 0.5 scale along the head's axis).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import SimpleITK as sitk

from ..io import read_volume
from ..io.sitk_images import image_from_array, quiet_itk
from ..resources import brain_atlas_path
from ..types import Geometry
from .morphology import distance_threshold, largest_component

logger = logging.getLogger(__name__)

SCALE_RANGE = (0.75, 1.35)
MIN_CORRELATION = 0.4
MIN_EXTENT_MM = 80.0


@dataclass(frozen=True)
class AtlasFit:
    """The atlas brain mask on the scan's grid and how well it fitted.

    Attributes:
        probability: (z, y, x) float32 in [0, 1], the linearly resampled atlas mask, or
            None when the fit was not attempted or rejected.
        scale: isotropic scale of the similarity transform (atlas to scan).
        correlation: normalised correlation of the fitted atlas with the network's
            tissue probability (1 is perfect).
        reason: why the fit was rejected ("" when accepted).
    """

    probability: np.ndarray | None
    scale: float = float("nan")
    correlation: float = float("nan")
    reason: str = ""

    @property
    def accepted(self) -> bool:
        return self.probability is not None


@lru_cache(maxsize=1)
def _atlas() -> tuple[np.ndarray, Geometry]:
    volume = read_volume(brain_atlas_path())
    return (volume.array > 0).astype(np.float32), volume.geometry


def _smoothed_on_grid(image: sitk.Image, resolution_mm: float) -> sitk.Image:
    """Gaussian-smoothed copy of ``image`` resampled to isotropic ``resolution_mm``."""
    smoothed = sitk.SmoothingRecursiveGaussian(image, resolution_mm / 2)
    spacing, size = image.GetSpacing(), image.GetSize()
    new_size = [max(int(round(size[i] * spacing[i] / resolution_mm)), 1) for i in range(3)]
    return sitk.Resample(
        smoothed, new_size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(),
        (resolution_mm,) * 3, image.GetDirection(), 0.0, sitk.sitkFloat32,
    )  # fmt: skip


def _core_centroid(tissue: np.ndarray, geometry: Geometry, depth_mm: float = 6.0) -> np.ndarray:
    """Physical (z, y, x) centroid of the thick core of the tissue mask: thin false
    positives (scalp) vanish and the centroid starts near the brain, not the neck."""
    mask = tissue > 0.5
    core = distance_threshold(mask, geometry.spacing, depth_mm, beyond=True)  # scipy's result, without its float64 volumes
    core = largest_component(core) if core.any() else mask
    return geometry.index_to_physical(np.argwhere(core).mean(axis=0))[0]


def fit_brain_atlas(tissue: np.ndarray, geometry: Geometry, *, resolution_mm: float = 3.0) -> AtlasFit:
    """Fit the MNI brain mask to a scan by a similarity transform.

    Args:
        tissue: (z, y, x) network probability of brain tissue (1 - P(background)).
        geometry: the grid of ``tissue`` (spacing in mm, origin, direction).
        resolution_mm: grid spacing the registration runs on.

    Returns:
        The fitted atlas on the grid of ``tissue``; rejected (``probability`` None) when
        the field of view is too small for a head, the network found no tissue, or the
        fit is implausible (scale outside 0.75–1.35, correlation below 0.4).
    """
    extent = np.asarray(tissue.shape) * np.asarray(geometry.spacing)
    if extent.min() < MIN_EXTENT_MM:
        return AtlasFit(None, reason=f"field of view {np.round(extent).tolist()} mm is smaller than a head")
    if (tissue > 0.5).sum() == 0:
        return AtlasFit(None, reason="the network found no tissue")
    atlas, atlas_geometry = _atlas()
    tissue_image = image_from_array(np.ascontiguousarray(tissue, dtype=np.float32), geometry)
    atlas_image = image_from_array(atlas, atlas_geometry)
    fixed = _smoothed_on_grid(tissue_image, resolution_mm)
    moving = _smoothed_on_grid(atlas_image, resolution_mm)

    # Transforms map scan (fixed) points to atlas (moving) points; SimpleITK is (x, y, z).
    scan_centre = _core_centroid(tissue, geometry)
    atlas_centre = atlas_geometry.index_to_physical(np.argwhere(atlas > 0).mean(axis=0))[0]
    transform = sitk.Similarity3DTransform()
    transform.SetCenter(tuple(float(v) for v in scan_centre[::-1]))
    transform.SetTranslation(tuple(float(v) for v in (atlas_centre - scan_centre)[::-1]))
    registration = sitk.ImageRegistrationMethod()
    registration.SetMetricAsCorrelation()
    registration.SetInterpolator(sitk.sitkLinear)
    registration.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3, numberOfIterations=200)
    registration.SetOptimizerScalesFromPhysicalShift()
    registration.SetShrinkFactorsPerLevel([2, 1])
    registration.SetSmoothingSigmasPerLevel([1, 0])
    registration.SetInitialTransform(transform, inPlace=True)
    try:
        with quiet_itk():  # failures are reported through the returned fit, not the console
            registration.Execute(fixed, moving)
    except RuntimeError as exc:  # e.g. every sample mapped outside the atlas
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return AtlasFit(None, reason=f"registration failed: {message[:200]}")

    scale = float(transform.GetScale())
    correlation = -float(registration.GetMetricValue())
    if not np.isfinite(scale) or not np.isfinite(correlation):
        return AtlasFit(None, scale, correlation, "registration diverged (no valid overlap)")
    if not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
        return AtlasFit(None, scale, correlation, f"implausible atlas scale {scale:.2f}")
    if correlation < MIN_CORRELATION:
        return AtlasFit(None, scale, correlation, f"atlas correlation {correlation:.2f} below {MIN_CORRELATION}")
    warped = sitk.Resample(atlas_image, tissue_image, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    logger.info("atlas fitted: scale %.3f, correlation %.3f", scale, correlation)
    return AtlasFit(sitk.GetArrayFromImage(warped), scale, correlation)


def atlas_region(fit: AtlasFit, spacing: tuple[float, float, float], margin_mm: float) -> np.ndarray:
    """Boolean (z, y, x): within ``margin_mm`` of the fitted atlas brain."""
    if not fit.accepted:
        raise ValueError(f"the atlas fit was rejected ({fit.reason}); there is no atlas region")
    outside = fit.probability < 0.5
    return distance_threshold(outside, spacing, margin_mm, beyond=False)
