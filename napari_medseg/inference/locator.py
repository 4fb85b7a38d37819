"""The brain locator: a small 3D network that finds the brain before the labels are drawn.

A tissue or structure bundle names its locator in ``config.extra["locator"]``::

    {"bundle": "brain-locator", "threshold": 0.5, "margin_mm": 3.0, "extracted_margin_mm": 10.0}

The locator sees the whole scan in 3D at its own coarse spacing (4 mm for the shipped one),
where skull, face and neck are told from brain by their shape; a 2.5D network at 1 mm sees
too little of the head for that. Its brain probability is mapped onto the labelling
network's grid; the brain is where it exceeds ``threshold`` (the largest piece, holes
filled), grown by ``margin_mm`` so that the finer network, not the coarse one, draws the
brain's edge. On a brain-extracted scan (exact zeros around a non-zero region that the
grown brain nearly covers) everything the extraction kept within ``extracted_margin_mm``
of the locator's brain is added: there is no skull or scalp to mistake for tissue, and the
coarse locator, thresholded, had cut off brain the extraction kept (on a stripped scan
never seen in training, 111 mL of the reference's CSF and grey matter, labelled
background with certainty, out of reach of the uncertainty maps and of corrections).
Outside the mask everything is background, so the locator runs first and the
labelling network only where the brain is (:func:`~napari_medseg.inference.engine.predict_probabilities`,
``within``): on a whole head, about half of the slices. The locator is part of the model:
it runs with or without post-processing, and fine-tuned versions keep their parent's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ..io.limits import release_heap
from ..types import Geometry
from .device import autocast_dtype
from ..postprocess.brain_mask import ZERO_BACKGROUND_FRACTION
from ..postprocess.morphology import largest_component, near
from .engine import predict_windows

logger = logging.getLogger(__name__)

_ATTRIBUTE = "_medseg_locator"


@dataclass(frozen=True)
class LocatorSettings:
    """``config.extra["locator"]`` parsed: which bundle, its threshold, the margin (mm) and
    the farthest (mm) a brain-extracted scan's non-zero region may reach beyond the brain."""

    bundle: str
    threshold: float = 0.5
    margin_mm: float = 3.0
    extracted_margin_mm: float = 10.0

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": self.bundle, "threshold": self.threshold, "margin_mm": self.margin_mm,
                "extracted_margin_mm": self.extracted_margin_mm}  # fmt: skip

    @classmethod
    def from_config(cls, config: Any) -> LocatorSettings | None:
        """The model's locator settings, or None when it has no locator.

        Raises:
            ValueError: settings of the wrong type or out of range (the value is named).
        """
        raw = config.extra.get("locator") if hasattr(config, "extra") else None
        if not raw:
            return None
        return cls.from_config_dict(raw)

    @classmethod
    def from_config_dict(cls, raw: Any) -> LocatorSettings:
        """Parse the mapping stored under ``extra["locator"]`` (see :meth:`from_config`)."""
        if not isinstance(raw, Mapping) or not isinstance(raw.get("bundle"), str) or not raw["bundle"]:
            raise ValueError(f"extra['locator'] {raw!r} must be a mapping with a 'bundle' name")
        unknown = set(raw) - {"bundle", "threshold", "margin_mm", "extracted_margin_mm"}
        if unknown:
            raise ValueError(f"extra['locator'] has unknown keys {sorted(unknown)}")
        settings = cls(str(raw["bundle"]), float(raw.get("threshold", 0.5)), float(raw.get("margin_mm", 3.0)),
                       float(raw.get("extracted_margin_mm", 10.0)))  # fmt: skip
        if not 0 < settings.threshold < 1:
            raise ValueError(f"locator threshold {settings.threshold} must be in (0, 1)")
        if not 0 <= settings.margin_mm <= 20:
            raise ValueError(f"locator margin_mm {settings.margin_mm} must be in [0, 20]")
        if not settings.margin_mm <= settings.extracted_margin_mm <= 30:
            raise ValueError(
                f"locator extracted_margin_mm {settings.extracted_margin_mm} must be in [margin_mm, 30] "
                f"(margin_mm is {settings.margin_mm})"
            )
        return settings


def find_brain(
    model: torch.nn.Module,
    image: np.ndarray,
    geometry: Geometry,
    device: torch.device | None = None,
    timings: dict[str, float] | None = None,
) -> tuple[np.ndarray, dict[str, Any]] | tuple[None, None]:
    """The brain mask (z, y, x) bool on the model grid ``geometry`` of ``image`` and what was
    found (see :func:`locate_brain`), or (None, None) when ``model`` has no locator.

    Its seconds go to ``timings["locator"]`` when given; the heap the locator's network and
    labelling freed goes back to the system before the labelling network runs."""
    locator = locator_of(model)
    if locator is None:
        return None, None
    mark = time.perf_counter()
    located = locate_brain(locator, image, geometry, LocatorSettings.from_config(model.config), device=device)
    release_heap()
    if timings is not None:
        timings["locator"] = time.perf_counter() - mark
    return located


def locator_of(model: torch.nn.Module) -> torch.nn.Module | None:
    """The locator network of ``model`` (loaded once and kept on the model), or None.

    It is held outside the module tree, so the model's state dict, parameters and
    fine-tuning never include it.

    Raises:
        BundleError: the locator bundle cannot be found or read.
        ValueError: it is not a 3D two-class model, or names a locator itself.
    """
    settings = LocatorSettings.from_config(model.config)
    if settings is None:
        return None
    locator = model.__dict__.get(_ATTRIBUTE)
    if locator is None:
        from ..models.catalog import load_model

        locator = load_model(settings.bundle, device="cpu")
        config = locator.config
        if LocatorSettings.from_config(config) is not None:
            raise ValueError(f"locator bundle {settings.bundle!r} has a locator of its own")
        if config.spatial_dims != 3 or config.num_classes != 2 or config.in_channels != 1:
            raise ValueError(
                f"locator bundle {settings.bundle!r} must be a 3D model with 1 input channel and 2 classes "
                f"(background, brain), not spatial_dims {config.spatial_dims}, in_channels {config.in_channels}, "
                f"classes {list(config.class_names)}"
            )
        model.__dict__[_ATTRIBUTE] = locator
    return locator


def locate_brain(
    locator: torch.nn.Module,
    image: np.ndarray,
    geometry: Geometry,
    settings: LocatorSettings,
    *,
    device: torch.device | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The brain mask on the labelling network's grid.

    Args:
        locator: a 3D network mapping (B, 1, *S) to (B, 2, *S) logits (background, brain),
            with ``.config.target_spacing`` its grid spacing in mm.
        image: (z, y, x) float32 normalised intensities on the labelling grid, in the
            locator's canonical orientation.
        geometry: that grid's geometry (spacing in mm).

    Returns:
        ``(mask, details)``: (z, y, x) bool, and what was found (brain volume in mL,
        the locator's spacing, threshold and margin, whether the scan looked
        brain-extracted and the mask's volume in mL) for the report.
    """
    device = device or torch.device("cpu")
    coarse_spacing = tuple(float(s) for s in locator.config.target_spacing)
    coarse_shape = tuple(max(1, int(round(n * s / c))) for n, s, c in zip(image.shape, geometry.spacing, coarse_spacing))
    coarse_geometry = Geometry(coarse_spacing, geometry.origin, geometry.direction)
    coarse = _coarse_image(image, geometry, coarse_geometry, coarse_shape)
    # The locator learned whole heads inside its patch's field of view (256 mm for the
    # shipped one): predict_windows pads a smaller scan with air to it.
    was_training = locator.training
    locator.eval().to(device)
    try:
        probability = predict_windows(
            locator, coarse, patch=tuple(locator.config.patch_size) or coarse.shape, overlap=0.25,
            device=device, amp=autocast_dtype(device),
        )[1]  # fmt: skip
    finally:
        locator.train(was_training)
    release_heap()  # the locator network's activations, before the model-grid arrays come
    above = _above(probability, coarse_geometry, geometry, image.shape, settings.threshold)
    del probability
    brain = largest_component(above)
    del above
    voxel_ml = float(np.prod(geometry.spacing)) / 1000.0
    brain_ml = round(float(np.count_nonzero(brain)) * voxel_ml, 1)
    mask = _grow(brain, settings.margin_mm, geometry.spacing)
    extracted = looks_brain_extracted(image, mask)
    if extracted:
        _add_extracted_region(mask, image, _grow(brain, settings.extracted_margin_mm, geometry.spacing))
    details = {
        "brain_ml": brain_ml,
        "spacing_mm": list(coarse_spacing),
        "threshold": settings.threshold,
        "margin_mm": settings.margin_mm,
        "brain_extracted": extracted,
        "mask_ml": round(float(np.count_nonzero(mask)) * voxel_ml, 1),
    }
    logger.info("locator: brain of %.0f mL%s", details["brain_ml"], " (brain-extracted scan)" if extracted else "")
    return mask, details


#: A scan looks brain-extracted when ``ZERO_BACKGROUND_FRACTION`` of the grid is exactly zero
#: (the post-processing's rule) and its non-zero voxels outside the grown brain are at most
#: this share of it: a whole head has skull, scalp and face there (0.7 to 4.6 times the
#: grown brain on three real heads), a brain extraction only what it kept beyond the
#: locator's coarse edge (0.07 on a real skull-stripped T1).
EXTRACTED_OUTSIDE_FRACTION = 0.25


def looks_brain_extracted(image: np.ndarray, mask: np.ndarray, slab: int = 16) -> bool:
    """Whether the (z, y, x) ``image`` looks brain-extracted around the (z, y, x) bool brain
    ``mask``: ``ZERO_BACKGROUND_FRACTION`` of it exactly zero and its non-zero voxels outside
    ``mask`` at most ``EXTRACTED_OUTSIDE_FRACTION`` of ``mask``'s volume (counted ``slab``
    slices at a time, without a whole-grid temporary)."""
    zeros = outside = 0
    for start in range(0, image.shape[0], slab):
        nonzero = image[start : start + slab] != 0
        zeros += nonzero.size - int(np.count_nonzero(nonzero))
        outside += int(np.count_nonzero(nonzero & ~mask[start : start + slab]))
    inside = int(np.count_nonzero(mask))
    return inside > 0 and zeros >= ZERO_BACKGROUND_FRACTION * image.size and outside <= EXTRACTED_OUTSIDE_FRACTION * inside


def _add_extracted_region(mask: np.ndarray, image: np.ndarray, reach: np.ndarray, slab: int = 16) -> None:
    """Add to ``mask``, in place, the non-zero voxels of ``image`` inside ``reach``."""
    for start in range(0, image.shape[0], slab):
        part = slice(start, start + slab)
        mask[part] |= reach[part] & (image[part] != 0)


def _coarse_image(image: np.ndarray, geometry: Geometry, coarse: Geometry, shape) -> np.ndarray:
    """(z, y, x) float32 normalised intensities on the ``coarse`` grid of ``shape``: the
    (z, y, x) float32 ``image`` on ``geometry`` smoothed by a Gaussian whose FWHM is the
    coarse spacing, then resampled (linear)."""
    import SimpleITK as sitk

    from ..preprocess.intensity import normalize_intensity
    from ..preprocess.pipeline import resample_sitk

    sigma = [max(0.0, (c / s) / 2.355) for c, s in zip(coarse.spacing, geometry.spacing)]
    smoothed = _smoothed_image(image, sigma, geometry)
    return normalize_intensity(sitk.GetArrayFromImage(resample_sitk(smoothed, coarse, shape, linear=True)))


def _smoothed_image(image: np.ndarray, sigma: list[float], geometry: Geometry, slab: int = 32):
    """``ndimage.gaussian_filter(image, sigma)`` as a SimpleITK image with ``geometry``.

    Filtered ``slab`` slices at a time, each with the kernel's radius of slices more on
    both sides (so every value comes from the same neighbours and arithmetic as in one
    call over the volume), and pasted into the image in place: SimpleITK copies what it
    is given, and a whole smoothed numpy volume beside that copy was a second model-grid
    float32 volume (0.8 times a 600x512x512 int16 CT).
    """
    import SimpleITK as sitk

    from ..io.sitk_images import apply_geometry

    halo = int(4.0 * sigma[0] + 0.5)  # ndimage's kernel radius along z at its truncate=4
    out = None
    for start in range(0, image.shape[0], slab):
        low, high = max(0, start - halo), min(image.shape[0], start + slab + halo)
        part = ndimage.gaussian_filter(image[low:high], sigma, truncate=4.0)[start - low : start - low + slab]
        piece = sitk.GetImageFromArray(part)
        if out is None:
            out = sitk.Image(list(image.shape[::-1]), piece.GetPixelID())
        out[:, :, start : start + part.shape[0]] = piece  # SimpleITK's paste, in place
    return apply_geometry(out, geometry)


def _above(probability: np.ndarray, source: Geometry, target: Geometry, shape, threshold: float) -> np.ndarray:
    """(z, y, x) bool: where the (z, y, x) float32 ``probability`` on the ``source`` grid,
    resampled (linear) onto the ``target`` grid of ``shape``, exceeds ``threshold``.

    Compared in SimpleITK's own buffer: a numpy copy of the resampled volume would be one
    more float32 model-grid volume (0.8 times a 600x512x512 int16 CT)."""
    import SimpleITK as sitk

    from ..preprocess.pipeline import resample_image

    resampled = resample_image(probability, source, target, shape, linear=True)
    return sitk.GetArrayViewFromImage(resampled) > threshold


def _grow(mask: np.ndarray, margin_mm: float, spacing, slab: int = 32) -> np.ndarray:
    """``mask`` grown by ``margin_mm`` (Euclidean), inside its bounding box, ``slab`` slices
    at a time: a voxel within the margin has its nearest mask voxel within ``margin_mm``
    along z too, so each slab needs only that many slices more on each side (the same
    result as one transform of the box, in short calls the viewer's thread can run between)."""
    if margin_mm <= 0 or not mask.any():
        return mask
    pad = [int(np.ceil(margin_mm / s)) + 1 for s in spacing]
    box = tuple(slice(max(0, low - p), high + p + 1) for (low, high), p in zip(_extent(mask), pad))
    inside = mask[box]
    grown = np.zeros_like(inside)
    for start in range(0, inside.shape[0], slab):
        low, high = max(0, start - pad[0]), min(inside.shape[0], start + slab + pad[0])
        part = inside[low:high]
        if part.any():
            grown[start : start + slab] = near(part, spacing, margin_mm)[start - low : start - low + slab]
    out = np.zeros_like(mask)
    out[box] = grown
    return out


def _extent(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of the non-empty ``mask``'s voxels along each axis, from its
    projections: ``np.nonzero`` would hold int64 indices of every voxel, 24 bytes each."""
    axes = range(mask.ndim)
    hits = [np.flatnonzero(mask.any(axis=tuple(a for a in axes if a != axis))) for axis in axes]
    return [(int(h[0]), int(h[-1])) for h in hits]
