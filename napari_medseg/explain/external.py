"""Grad-CAM of external models (nnU-Net folders, MONAI bundles), computed where they run.

An external model segments a whole scan its own way, so it also lays its own windows for a
map (``model.grad_cam_volume``, :mod:`napari_medseg.models.external.cam`); this module hands
it what a map is: :func:`window_explainer`, the hook on the layer and Grad-CAM's (or
Grad-CAM++'s) channel weights, the same :class:`~.gradcam._Explainer` our own models use,
so a window's map has the same conventions (ReLU of the weighted activations, upsampled
to the window, in the score's units, not normalised).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from ..control import ProgressCallback, StopCheck
from ..types import Volume
from .gradcam import CamMethod, _Explainer
from .targets import SegmentationTarget

__all__ = ["explain_external", "window_explainer"]


def window_explainer(target_class: int, *, layer: nn.Module | str, method: str | CamMethod = "gradcam"):
    """``explainer(network)``: a context in which ``explain_windows(windows, regions)`` gives
    the maps (B, *P) float32 >= 0 on the CPU of windows (B, C, *P), the score being
    ``target_class``'s logits summed over each window's bool region (B, *P).

    Raises (on entering):
        ValueError: ``layer`` is not a module of the network (some names are listed), or
            ``method`` is unknown.
    """

    @contextlib.contextmanager
    def explainer(network: nn.Module) -> Iterator:
        with _Explainer(network, layer=layer, method=method, reshape=None) as explaining:
            target = SegmentationTarget(target_class)

            def explain_windows(windows: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
                target.region = regions
                maps, _ = explaining.run(windows, target)
                return maps

            yield explain_windows

    return explainer


def explain_external(
    volume: Volume,
    model,
    *,
    target_class: int,
    region: np.ndarray | None = None,
    method: str | CamMethod = "gradcam",
    layer: nn.Module | str | None = None,
    progress: ProgressCallback = None,
    should_stop: StopCheck = None,
) -> np.ndarray:
    """Grad-CAM of class index ``target_class`` of an external ``model`` on ``volume``'s grid.

    The map is computed on the model's preprocessed grid with its own windows and blending
    (nnU-Net: its sliding windows and Gaussian, averaged over its folds, no mirroring; MONAI:
    its inferer) and mapped back its own way; see the models' ``grad_cam_volume``.

    Args:
        region: bool (z, y, x) on the scan's grid; default: the voxels the model predicts
            as ``target_class``.
        layer: a module name of the model's network (e.g. ``"decoder.stages.4"``); default
            ``model.config.gradcam_layer``, its finest decoder stage.
        Others: as :func:`~napari_medseg.explain.scan.explain_scan`; the network runs where
            its weights are.

    Returns:
        (z, y, x) float32 >= 0 on ``volume``'s grid.

    Raises:
        ValueError: no layer given and none configured, an unknown layer or method.
        Cancelled: ``should_stop()`` returned True.
    """
    chosen = layer if layer is not None else model.config.gradcam_layer
    if not chosen:
        raise ValueError(f"no Grad-CAM layer given and {type(model).__name__} {model.bundle_path} names no default; "
                         "pass layer= a module name of its network")  # fmt: skip
    weights = next(model.parameters(), None)
    device = weights.device if weights is not None else torch.device("cpu")
    return model.grad_cam_volume(
        volume.array, volume.spacing, explainer=window_explainer(target_class, layer=chosen, method=method),
        target_class=target_class, region=region, geometry=volume.geometry, device=device, progress=progress,
        should_stop=should_stop,
    )  # fmt: skip
