"""Whole-volume segmentation: preprocess, predict, post-process, map back."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ..preprocess import prepare_for_model, release_pages, restore_into
from ..types import Geometry, Volume
from .atlas import atlas_region, fit_brain_atlas
from .control import ProgressCallback, StopCheck
from .device import autocast_dtype, select_device
from .locator import LocatorSettings, locate_brain, locator_of
from .refine import TissueMixture, apply_mixture, brain_mask, fit_mixture, largest_component, network_override
from .slices import predict_slices
from .windows import predict_windows

logger = logging.getLogger(__name__)


@dataclass
class Segmentation:
    """A segmentation on the input's own grid.

    Attributes:
        labels: (z, y, x) uint8 class indices.
        probabilities: (z, y, x, K) float32, summing to 1 over K.
        class_names: K names, background first.
        timings: seconds per stage ("preprocess", "network", "postprocess", "restore", "total").
        device: where the network ran; ``precision``: autocast dtype or "fp32".
        postprocess: the bundle's post-processing settings plus, under "applied", what
            was done (brain mask source, atlas fit).
    """

    labels: np.ndarray
    probabilities: np.ndarray
    class_names: tuple[str, ...]
    timings: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"
    precision: str = "fp32"
    postprocess: dict[str, Any] = field(default_factory=dict)


def context_offsets(config) -> tuple[int, ...]:
    """Slice offsets (in model-grid slices) stacked as channels by a 2D model."""
    offsets_mm = config.extra.get("context_offsets_mm")
    if not offsets_mm:
        if config.in_channels != 1:
            raise ValueError(f"model has {config.in_channels} input channels but no context_offsets_mm")
        return (0,)
    spacing = config.target_spacing[0]
    offsets = tuple(int(round(o / spacing)) for o in offsets_mm)
    if len(offsets) != config.in_channels:
        raise ValueError(f"context_offsets_mm {offsets_mm} do not match in_channels {config.in_channels}")
    return offsets


def predict_probabilities(
    model: torch.nn.Module,
    image: np.ndarray,
    *,
    device: torch.device,
    amp: torch.dtype | None,
    batch_size: int | None = None,
    overlap: float = 0.5,
    progress: ProgressCallback = None,
    should_stop: StopCheck = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Network probabilities (K, z, y, x) on the model grid (2D slices or 3D windows),
    written into ``out`` when given (a float32 array of that shape, e.g. a disk-backed
    ``numpy.memmap``: 2D models write it batch by batch, 3D windows copy their blend in)."""
    config = model.config
    if config.spatial_dims == 2:
        return predict_slices(
            model, image, offsets=context_offsets(config), batch_size=batch_size or 8,
            device=device, amp=amp, progress=progress, should_stop=should_stop, out=out,
        )  # fmt: skip
    patch = tuple(config.patch_size) or image.shape
    blended = predict_windows(
        model, image, patch=patch, overlap=overlap, batch_size=batch_size or 2,
        device=device, amp=amp, progress=progress, should_stop=should_stop,
    )  # fmt: skip
    if out is None:
        return blended
    if out.shape != blended.shape or out.dtype != np.float32:
        raise ValueError(f"output array {out.shape} {out.dtype} must be {blended.shape} float32")
    out[...] = blended
    release_pages(out)
    return out


@dataclass
class PostprocessFit:
    """What the bundle's post-processing decided for one scan, reusable on any block.

    Attributes:
        mask: (z, y, x) bool brain mask on the model grid, or None (no mask step).
        mixture: the per-scan tissue mixture, or None (no EM step, or an empty mask).
        details: what was applied (brain mask source, atlas fit), JSON-ready.
        em: whether the bundle asks for the mixture step (without a mask step, its
            region is each prediction's own foreground).
        override: the network's confidence above which its class replaces the
            mixture's (``em_refine.network_override``), or None.
    """

    mask: np.ndarray | None
    mixture: TissueMixture | None
    details: dict[str, Any]
    em: bool = False
    override: float | None = None

    def apply(self, image: np.ndarray, probabilities: np.ndarray, region: tuple[slice, ...] | None = None) -> np.ndarray:
        """Post-processed (K, *S) probabilities for the block ``region`` of the model grid
        (the whole grid when None): ``image`` (*S) and ``probabilities`` (K, *S) are that
        block. Per voxel, so blocks can be processed one at a time."""
        if self.mask is None and not self.em:
            return probabilities
        mask = np.ones(image.shape, bool) if self.mask is None else self.mask[region or ...]
        if self.em:
            if self.mask is None:
                mask = np.argmax(probabilities, axis=0) > 0
            out = apply_mixture(self.mixture, image, probabilities, mask)
            if self.override is not None and self.mixture is not None:
                out = network_override(out, probabilities, mask, self.override)
            return out
        out = probabilities.copy()
        out[0][~mask] = 1.0
        out[1:, ~mask] = 0.0
        return out


def postprocess_settings(config: Any, enabled: bool = True) -> dict[str, Any]:
    """The bundle's ``extra["postprocess"]`` settings (a copy), or {} when not ``enabled``.

    A bundle with a brain locator (``extra["locator"]``, see
    :mod:`napari_medseg.inference.locator`) gets it under ``"locator"`` either way: the
    locator is part of the model, not a refinement.
    """
    settings = dict(config.extra.get("postprocess", {})) if enabled else {}
    if config.extra.get("locator"):
        settings["locator"] = dict(config.extra["locator"])
    return settings


def fit_postprocess(
    image: np.ndarray,
    probabilities: np.ndarray,
    settings: dict[str, Any],
    *,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    geometry: Geometry | None = None,
    locator: torch.nn.Module | None = None,
    device: torch.device | None = None,
) -> PostprocessFit:
    """Decide the bundle's ``extra["postprocess"]`` for one scan: brain mask (atlas prior,
    opening, largest component, closing, or the non-zero region of a brain-extracted
    scan) and the per-scan tissue mixture (see :mod:`napari_medseg.inference.refine` and
    :mod:`napari_medseg.inference.atlas`). ``probabilities`` (K, z, y, x) are the
    network's plain prediction on the model grid. ``locator`` is the model's brain locator
    (:func:`~napari_medseg.inference.locator.locator_of`), required when ``settings`` has
    ``"locator"``; it runs on ``device``."""
    details: dict[str, Any] = {}
    mask = None
    if settings.get("locator"):
        if locator is None:
            raise ValueError("the model's settings ask for a brain locator but none was given")
        grid = geometry or Geometry(tuple(spacing), (0.0, 0.0, 0.0))
        mask, details["locator"] = locate_brain(
            locator, image, grid, LocatorSettings.from_config_dict(settings["locator"]), device=device
        )
    mask_settings = dict(settings.get("brain_mask") or {})
    if mask_settings and mask is None:
        margin = mask_settings.pop("atlas_margin_mm", None)
        allowed = None
        if margin is not None and geometry is not None:
            allowed = _atlas_region_function(geometry, float(margin), details)
        mask, stripped = brain_mask(image, probabilities, spacing=spacing, allowed_region=allowed, **mask_settings)
        details["brain_mask"] = "non-zero region (brain-extracted input)" if stripped else "network"
        logger.info("brain mask of %d voxels (%s)", int(mask.sum()), details["brain_mask"])
    elif settings.get("largest_component") and mask is None:
        mask = largest_component(np.argmax(probabilities, axis=0) > 0)
    em = settings.get("em_refine")
    mixture = None
    if em:
        em_mask = mask if mask is not None else np.argmax(probabilities, axis=0) > 0
        mixture = fit_mixture(image, probabilities, em_mask, iterations=int(em.get("iterations", 12)),
                              prior_weight=float(em.get("prior_weight", 1.0)))  # fmt: skip
        if mixture is not None:
            details["mixture"] = {"means": np.round(mixture.means, 4).tolist(), "prior_weight": mixture.prior_weight}
    override = em.get("network_override") if em else None
    if override is not None:
        override = details["network_override"] = float(override)
    return PostprocessFit(mask=mask, mixture=mixture, details=details, em=bool(em), override=override)


def postprocess(
    image: np.ndarray,
    probabilities: np.ndarray,
    settings: dict[str, Any],
    *,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    geometry: Geometry | None = None,
    details: dict[str, Any] | None = None,
    locator: torch.nn.Module | None = None,
    device: torch.device | None = None,
) -> np.ndarray:
    """:func:`fit_postprocess` applied to the whole grid; (K, z, y, x) probabilities.

    ``details``, if given, receives what was applied: the brain mask's source and the
    atlas fit (scale, correlation, or why it was rejected).
    """
    if not settings:
        return probabilities
    fit = fit_postprocess(image, probabilities, settings, spacing=spacing, geometry=geometry, locator=locator, device=device)
    if details is not None:
        details.update(fit.details)
    return fit.apply(image, probabilities)


def apply_in_slabs(fit: PostprocessFit, image: np.ndarray, probabilities: np.ndarray, slab: int = 16) -> None:
    """:meth:`PostprocessFit.apply` to ``slab`` model-grid slices at a time, written back into
    ``probabilities`` (K, z, y, x): its working arrays stay slab-sized, not volume-sized."""
    for start in range(0, image.shape[0], slab):
        region = (slice(start, start + slab), slice(None), slice(None))
        probabilities[(slice(None), *region)] = fit.apply(image[region], probabilities[(slice(None), *region)], region)
        release_pages(probabilities)


def argmax_labels(probabilities: np.ndarray, slab: int = 16) -> np.ndarray:
    """(z, y, x) uint8 class indices of (z, y, x, K) probabilities, ``slab`` slices at a time
    (a whole-volume ``argmax`` would hold an int64 volume; a memmap's pages are released
    as it goes)."""
    labels = np.empty(probabilities.shape[:-1], dtype=np.uint8)
    for start in range(0, labels.shape[0], slab):
        labels[start : start + slab] = np.argmax(probabilities[start : start + slab], axis=-1)
        release_pages(probabilities)
    return labels


def _atlas_region_function(geometry: Geometry, margin_mm: float, details: dict[str, Any]):
    """Callable for :func:`brain_mask`: fits the atlas to the tissue probability and
    returns the region within ``margin_mm`` of it, or None (logged) if the fit fails."""

    def region(tissue: np.ndarray) -> np.ndarray | None:
        fit = fit_brain_atlas(tissue, geometry)
        details["atlas"] = {"scale": round(fit.scale, 4), "correlation": round(fit.correlation, 4)}
        if not fit.accepted:
            details["atlas"]["rejected"] = fit.reason
            logger.warning("brain atlas not used: %s", fit.reason)
            return None
        return atlas_region(fit, geometry.spacing, margin_mm)

    return region


def segment(
    volume: Volume,
    model: torch.nn.Module,
    *,
    device: str | torch.device | None = "auto",
    precision: str = "auto",
    batch_size: int | None = None,
    postprocessing: bool = True,
    progress: ProgressCallback = None,
    should_stop: StopCheck = None,
    inspect: Callable[[np.ndarray, Any], None] | None = None,
    allocate: Callable[[tuple[int, ...]], np.ndarray] | None = None,
    allocate_model: Callable[[tuple[int, ...]], np.ndarray] | None = None,
) -> Segmentation:
    """Segment ``volume`` with a model carrying ``.config`` (see :mod:`napari_medseg.models`).

    ``inspect(probabilities, prepared)``, if given, sees the network's own (K, z, y, x)
    probabilities on the model grid before post-processing (used for the OOD score); it
    must not keep them: post-processing then rewrites that array in place.
    ``allocate(shape)``, if given, returns the zeroed or empty float32 array of ``shape``
    (z, y, x, K) that receives the probabilities on the input grid, e.g. a disk-backed
    ``numpy.memmap`` when they would not fit in memory; by default ``numpy.empty``.
    ``allocate_model(shape)`` does the same for the (K, z, y, x) float32 probabilities on
    the model grid.

    Memory beyond the input: the model-grid image (until the post-processing is done) and
    the (K, ...) float32 model-grid probabilities (or ``allocate_model``'s array), the
    post-processing's working arrays, one class at a time while mapping back, the
    (z, y, x) uint8 labels and ``allocate``'s array.

    Raises:
        Cancelled: ``should_stop()`` returned True between batches.
    """
    config = model.config
    torch_device = select_device(device)
    amp = autocast_dtype(torch_device, precision)
    if getattr(model, "segments_volumes", False):  # e.g. an nnU-Net folder: its own preprocessing and windows
        from .external import segment_external

        return segment_external(volume, model, device=torch_device, progress=progress, should_stop=should_stop,
                                allocate=allocate, inspect=inspect)  # fmt: skip
    timings: dict[str, float] = {}
    start = time.perf_counter()
    prepared = prepare_for_model(volume, config)
    timings["preprocess"] = time.perf_counter() - start

    mark = time.perf_counter()
    was_training = model.training
    model.eval()
    model.to(torch_device)
    try:
        model_shape = (len(config.class_names), *prepared.image.shape)
        probabilities = predict_probabilities(
            model, prepared.image, device=torch_device, amp=amp, batch_size=batch_size,
            progress=progress, should_stop=should_stop,
            out=None if allocate_model is None else allocate_model(model_shape),
        )  # fmt: skip
    finally:
        model.train(was_training)
    timings["network"] = time.perf_counter() - mark

    if inspect is not None:
        inspect(probabilities, prepared)
    mark = time.perf_counter()
    settings = postprocess_settings(config, postprocessing)
    details: dict[str, Any] = {}
    if settings:
        fit = fit_postprocess(
            prepared.image, probabilities, settings, spacing=prepared.geometry.spacing, geometry=prepared.geometry,
            locator=locator_of(model), device=torch_device,
        )  # fmt: skip
        details.update(fit.details)
        apply_in_slabs(fit, prepared.image, probabilities)
    timings["postprocess"] = time.perf_counter() - mark
    prepared.drop_image()  # not needed to map back: its memory goes before the input grid's arrays come

    mark = time.perf_counter()
    shape = (*prepared.input_shape, probabilities.shape[0])
    restored = restore_into(probabilities, prepared, np.empty(shape, np.float32) if allocate is None else allocate(shape))
    del probabilities
    labels = argmax_labels(restored)
    timings["restore"] = time.perf_counter() - mark
    timings["total"] = time.perf_counter() - start
    logger.info("segmented %s in %.1f s on %s", volume.shape, timings["total"], torch_device)
    return Segmentation(
        labels=labels,
        probabilities=restored,
        class_names=tuple(config.class_names),
        timings=timings,
        device=str(torch_device),
        precision=str(amp).replace("torch.", "") if amp else "fp32",
        postprocess={**settings, "applied": details} if settings else {},
    )
