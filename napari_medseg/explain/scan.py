"""Grad-CAM for a whole scan: onto the model's grid, explain, and back onto the scan's grid."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..control import ProgressCallback, StopCheck
from ..types import Volume


def class_index(class_names: Sequence[str], target: str | int) -> int:
    """Index of a class given by name (case-insensitive) or index; errors list the classes."""
    names = list(class_names)
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        index = int(target)
        if 0 <= index < len(names):
            return index
        raise ValueError(f"class index {index} is out of range 0..{len(names) - 1} ({names})")
    lowered = [name.lower() for name in names]
    if target.lower() in lowered:
        return lowered.index(target.lower())
    raise ValueError(f"class {target!r} is not one of the model's classes {names}")


def explain_scan(
    volume: Volume,
    model,
    *,
    target_class: str | int,
    region: np.ndarray | None = None,
    method: str = "gradcam",
    layer: str | None = None,
    batch_size: int = 8,
    progress: ProgressCallback = None,
    should_stop: StopCheck = None,
) -> np.ndarray:
    """Grad-CAM map of ``target_class`` for ``volume``, on the volume's own grid.

    Args:
        volume: the scan (z, y, x).
        model: a bundle model (``.config`` gives orientation, spacing, context slices), or
            an external one (nnU-Net folder, MONAI bundle): computed its own way, see
            :func:`~napari_medseg.explain.external.explain_external`.
        target_class: class name or index.
        region: optional boolean (z, y, x) mask on the scan's grid; default: the voxels
            the model predicts as ``target_class`` (per slice for 2D models).
        method: "gradcam" or "gradcam++".
        layer: module name; default the bundle's ``gradcam_layer`` (an external model's:
            a module name of its network).

    Returns:
        (z, y, x) float32, non-negative, on ``volume``'s grid.
    """
    from ..models.external import is_external
    from ..preprocess import prepare_for_model
    from .volume import grad_cam_volume

    config = model.config
    index = class_index(config.class_names, target_class)
    if region is not None and region.shape != volume.shape:
        raise ValueError(f"region of shape {region.shape} does not match the scan {volume.shape}")
    if is_external(model):  # an nnU-Net folder or MONAI bundle lays its own windows
        from .external import explain_external

        return explain_external(volume, model, target_class=index, region=region, method=method, layer=layer,
                                progress=progress, should_stop=should_stop)  # fmt: skip
    prepared = prepare_for_model(volume, config)
    model_region = None
    if region is not None:
        model_region = prepared.to_model_grid(np.asarray(region, dtype=np.uint8), linear=False) > 0
    kwargs = {}
    if config.spatial_dims == 2:
        kwargs["context_offsets"] = config.context_offsets
    cam = grad_cam_volume(
        model, prepared.image, target_class=index, layer=layer, region=model_region, method=method,
        batch=batch_size, progress=progress, should_stop=should_stop, **kwargs,
    )  # fmt: skip
    return prepared.to_input_grid(cam.astype(np.float32))
