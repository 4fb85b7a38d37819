"""The brain locator: a small 3D network that finds the brain before the labels are drawn.

A tissue or structure bundle names its locator in ``config.extra["locator"]``::

    {"bundle": "brain-locator", "threshold": 0.5, "margin_mm": 3.0}

The locator sees the whole scan in 3D at its own coarse spacing (4 mm for the shipped one),
where skull, face and neck are told from brain by their shape; a 2.5D network at 1 mm sees
too little of the head for that. Its brain probability is mapped onto the labelling
network's grid; the brain is where it exceeds ``threshold`` (the largest piece, holes
filled), grown by ``margin_mm`` so that the finer network, not the coarse one, draws the
brain's edge. Outside it everything is background. The locator is part of the model: it
runs with or without post-processing, and fine-tuned versions keep their parent's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ..types import Geometry
from .device import autocast_dtype
from ..postprocess.morphology import largest_component
from .engine import predict_windows

logger = logging.getLogger(__name__)

_ATTRIBUTE = "_medseg_locator"


@dataclass(frozen=True)
class LocatorSettings:
    """``config.extra["locator"]`` parsed: which bundle, its threshold and the margin (mm)."""

    bundle: str
    threshold: float = 0.5
    margin_mm: float = 3.0

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": self.bundle, "threshold": self.threshold, "margin_mm": self.margin_mm}

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
        unknown = set(raw) - {"bundle", "threshold", "margin_mm"}
        if unknown:
            raise ValueError(f"extra['locator'] has unknown keys {sorted(unknown)}")
        settings = cls(str(raw["bundle"]), float(raw.get("threshold", 0.5)), float(raw.get("margin_mm", 3.0)))
        if not 0 < settings.threshold < 1:
            raise ValueError(f"locator threshold {settings.threshold} must be in (0, 1)")
        if not 0 <= settings.margin_mm <= 20:
            raise ValueError(f"locator margin_mm {settings.margin_mm} must be in [0, 20]")
        return settings


def find_brain(
    model: torch.nn.Module, image: np.ndarray, geometry: Geometry, device: torch.device | None = None
) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The brain mask (z, y, x) bool on the model grid ``geometry`` of ``image`` and what was
    found (see :func:`locate_brain`), or None when ``model`` has no locator."""
    locator = locator_of(model)
    if locator is None:
        return None
    return locate_brain(locator, image, geometry, LocatorSettings.from_config(model.config), device=device)


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
        the locator's spacing, threshold and margin) for the report.
    """
    from ..preprocess.intensity import normalize_intensity
    from ..preprocess.pipeline import resample_array

    device = device or torch.device("cpu")
    coarse_spacing = tuple(float(s) for s in locator.config.target_spacing)
    coarse_shape = tuple(max(1, int(round(n * s / c))) for n, s, c in zip(image.shape, geometry.spacing, coarse_spacing))
    coarse_geometry = Geometry(coarse_spacing, geometry.origin, geometry.direction)
    smoothed = ndimage.gaussian_filter(image, [max(0.0, (c / s) / 2.355) for c, s in zip(coarse_spacing, geometry.spacing)])
    coarse = normalize_intensity(resample_array(smoothed, geometry, coarse_geometry, coarse_shape, linear=True))
    del smoothed  # model-grid sized: gone before the mask's own model-grid arrays come
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
    above = resample_array(probability, coarse_geometry, geometry, image.shape, linear=True) > settings.threshold
    brain = largest_component(above)
    del above
    mask = _grow(brain, settings.margin_mm, geometry.spacing)
    voxel_ml = float(np.prod(geometry.spacing)) / 1000.0
    details = {
        "brain_ml": round(float(brain.sum()) * voxel_ml, 1),
        "spacing_mm": list(coarse_spacing),
        "threshold": settings.threshold,
        "margin_mm": settings.margin_mm,
    }
    logger.info("locator: brain of %.0f mL", details["brain_ml"])
    return mask, details


def _grow(mask: np.ndarray, margin_mm: float, spacing, slab: int = 16) -> np.ndarray:
    """``mask`` grown by ``margin_mm`` (Euclidean), inside its bounding box, ``slab`` slices
    at a time: a voxel within the margin has its nearest mask voxel within ``margin_mm``
    along z too, so each slab needs only that many slices more on each side (the same
    result as one transform of the box, in short calls the viewer's thread can run between)."""
    if margin_mm <= 0 or not mask.any():
        return mask
    pad = [int(np.ceil(margin_mm / s)) + 1 for s in spacing]
    nonzero = np.nonzero(mask)
    box = tuple(slice(max(0, int(i.min()) - p), int(i.max()) + p + 1) for i, p in zip(nonzero, pad))
    inside = mask[box]
    grown = np.zeros_like(inside)
    for start in range(0, inside.shape[0], slab):
        low, high = max(0, start - pad[0]), min(inside.shape[0], start + slab + pad[0])
        part = inside[low:high]
        if part.any():
            near = ndimage.distance_transform_edt(~part, sampling=spacing) <= margin_mm
            grown[start : start + slab] = near[start - low : start - low + slab]
    out = np.zeros_like(mask)
    out[box] = grown
    return out
