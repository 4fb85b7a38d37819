"""Grad-CAM over a whole (z, y, x) volume: per slice for 2D models, per blended window for 3D.

Slices get their neighbours as channels exactly as inference does
(:func:`~napari_medseg.inference.tiling.context_stack`), and 3D windows are placed and
blended by the traversal inference uses (:mod:`napari_medseg.inference.tiling`).
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..inference.tiling import Blend, slice_tiles, traverse, window_tiles
from .gradcam import CamMethod, Reshape, _Explainer, _model_attr
from .targets import SegmentationTarget

__all__ = ["grad_cam_volume"]

logger = logging.getLogger(__name__)


def grad_cam_volume(
    model: nn.Module,
    volume_array: np.ndarray,
    *,
    target_class: int,
    layer: nn.Module | str | None = None,
    region: np.ndarray | None = None,
    method: str | CamMethod = "gradcam",
    slice_axis: int = 0,
    batch: int = 8,
    context_offsets: Sequence[int] = (0,),
    progress: Callable[[int, int], object] | None = None,
    should_stop: Callable[[], bool] | None = None,
    spatial_dims: int | None = None,
    window: Sequence[int] | int | None = None,
    reshape: Reshape | None = None,
) -> np.ndarray:
    """Grad-CAM over a (z, y, x) volume: per slice for 2D models, per window for 3D ones.

    2D models (the default): slice k along ``slice_axis`` is explained with the input
    channels ``volume[k + o] for o in context_offsets`` (zeros outside the volume), e.g.
    ``(-4, -2, 0, 2, 4)`` for a 2.5D U-Net with 5 input channels; ``batch`` slices per
    forward pass; the region of slice k is ``region``'s slice k.
    3D models (``spatial_dims=3`` or ``model.config.spatial_dims == 3``): windows of size
    ``window`` (default: the config's ``patch_size``, else the whole volume; clipped to the
    volume) with overlap 0.5, ``batch`` windows per pass, maps blended with Gaussian weights
    (sigma = window / 8); the model takes one input channel.

    Args:
        volume_array: (z, y, x) intensities, never modified.
        region: optional bool mask of the volume's shape; default per slice/window: the
            voxels predicted as ``target_class`` (empty ones give zeros).
        progress: ``progress(done, total)`` after each batch (slices or windows).
        should_stop: checked before each batch; when it returns True,
            :class:`napari_medseg.control.Cancelled` is raised (hooks and modes restored).
        Others: as in :func:`grad_cam`.

    Returns:
        float32 (z, y, x) map, >= 0, the volume's shape.

    Raises:
        Cancelled: ``should_stop()`` returned True.
        ValueError: bad shapes, offsets not matching the model's input channels, bad batch
            or window, and the errors of :func:`grad_cam`.
    """
    from ..models.external import ExternalModelError, is_external

    if is_external(model):
        raise ExternalModelError(getattr(model, "bundle_path", "?"), "Grad-CAM of an external model runs on the "
                                 "whole scan its own way: use napari_medseg.explain.explain_scan(volume, model, ...)")  # fmt: skip
    volume, region, dims, offsets = _checked(model, volume_array, region, batch, spatial_dims, context_offsets)
    target = SegmentationTarget(target_class)
    with _Explainer(model, layer=layer, method=method, reshape=reshape) as explainer:
        if dims == 2:
            out, empty = _slices(
                explainer, volume, region, target, slice_axis, batch, offsets, progress,
                should_stop,
            )  # fmt: skip
        else:
            out, empty = _windows(
                explainer, volume, region, target, _window(model, window, volume.shape),
                batch, progress, should_stop,
            )  # fmt: skip
    done, total = int(empty.sum()), empty.size
    if done == total:
        logger.warning(
            "Grad-CAM: nothing to explain for class %d in any of %d %s; the map is all zeros",
            target_class, total, "slices" if dims == 2 else "windows",
        )  # fmt: skip
    elif done:
        logger.debug("Grad-CAM: %d of %d parts had an empty region", done, total)
    return out


def _checked(model, volume_array, region, batch, spatial_dims, context_offsets):
    """The arguments of :func:`grad_cam_volume`, checked: (volume, region, dims, offsets)."""
    volume = np.asarray(volume_array)
    if volume.ndim != 3:
        raise ValueError(f"volume shape {volume.shape} must be (z, y, x)")
    if region is not None:
        region = np.asarray(region)
        if region.shape != volume.shape:
            raise ValueError(f"region shape {region.shape} must be the volume shape {volume.shape}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch {batch!r} must be a positive int")
    dims = spatial_dims if spatial_dims is not None else _model_attr(model, "spatial_dims") or 2
    if dims not in (2, 3):
        raise ValueError(f"spatial_dims {dims!r} must be 2 or 3")
    offsets = tuple(int(o) for o in context_offsets)
    in_channels = _model_attr(model, "in_channels")
    channels = len(offsets) if dims == 2 else 1
    if not offsets or (dims == 3 and offsets != (0,)):
        raise ValueError(f"context_offsets {tuple(context_offsets)!r} must be non-empty (2D), or (0,) (3D)")
    if in_channels is not None and in_channels != channels:
        raise ValueError(f"the model takes {in_channels} input channels but context_offsets {offsets} give {channels}")
    return volume, region, dims, offsets


def _slices(explainer, volume, region, target, slice_axis, batch, offsets, progress, should_stop):
    if not -3 <= slice_axis < 3:
        raise ValueError(f"slice_axis {slice_axis!r} must be 0, 1 or 2")
    vol = np.moveaxis(volume, slice_axis, 0)
    reg = None if region is None else np.moveaxis(region, slice_axis, 0)
    stack = torch.from_numpy(np.ascontiguousarray(vol, dtype=np.float32))
    out = np.zeros(vol.shape, dtype=np.float32)
    empty = np.zeros(vol.shape[0], dtype=bool)

    def run(inputs: torch.Tensor, regions):
        (slab,) = regions
        target.region = None if reg is None else torch.from_numpy(reg[slab].astype(bool))
        return explainer.run(inputs.numpy(), target)

    tiles = slice_tiles(vol.shape[0], batch, offsets)
    for (slab,), (cam, emp) in traverse(stack, tiles, run, progress=progress, should_stop=should_stop):
        out[slab], empty[slab] = cam.numpy(), emp.numpy()
    return np.moveaxis(out, 0, slice_axis), empty


def _window(model, window, shape) -> tuple[int, ...]:
    if window is None:
        patch = tuple(getattr(getattr(model, "config", None), "patch_size", ()) or ())
        window = patch if len(patch) == 3 else shape
    elif isinstance(window, (int, np.integer)):
        window = (window,) * 3
    try:
        sizes = tuple(operator.index(w) for w in window)
    except TypeError:
        sizes = ()
    if len(sizes) != 3 or min(sizes) < 1:
        raise ValueError(f"window {window!r} must be 3 positive ints (z, y, x)")
    return tuple(min(w, s) for w, s in zip(sizes, shape))


def _windows(explainer, volume, region, target, window, batch, progress, should_stop):
    tiles = window_tiles(volume.shape, window, 0.5, batch)
    blend = Blend(volume.shape, tiles.weight)
    empty = np.zeros(tiles.units, dtype=bool)

    def run(inputs: torch.Tensor, regions):
        target.region = None if region is None else torch.from_numpy(np.stack([region[box] for box in regions]))
        return explainer.run(inputs.numpy(), target)

    done = 0
    stack = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))
    for regions, (cam, emp) in traverse(stack, tiles, run, progress=progress, should_stop=should_stop):
        for box, values in zip(regions, cam.numpy()):
            blend.add(box, values)
        empty[done : done + len(regions)] = emp.numpy()
        done += len(regions)
    return blend.result(), empty
