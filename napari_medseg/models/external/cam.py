"""What the external models share to compute a class-activation map (Grad-CAM, Grad-CAM++).

An external model (:class:`~.nnunet_model.NnUNetModel`, :class:`~.monai_model.MonaiBundleModel`)
computes a map the way it predicts, through ``grad_cam_volume(image, spacing, *, explainer,
target_class, region, ...)``: its own preprocessing, windows and blending, its own way back
to the scan's grid. What a map *is* (the hook, the gradients, the channel weights) belongs
to :mod:`napari_medseg.explain`, which this layer must not import; so the model is handed a
:data:`WindowExplainer`: given the network, it opens a context (the hook on the layer, eval
mode; the layer and method are checked on entry) in which batches of windows are explained::

    with explainer(network) as explain_windows:
        maps = explain_windows(windows, regions)

``windows`` (B, 1, *P) float32 on the network's device, ``regions`` bool (B, *P): the voxels
whose logits of the target class enter the score; ``maps`` (B, *P) float32 on the CPU, >= 0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import numpy as np
import torch
from torch import nn

__all__ = ["WindowExplainer", "WindowMaps", "checked_region", "checked_target", "nothing_to_explain"]

logger = logging.getLogger(__name__)

#: ``explain_windows(windows, regions) -> maps``, see the module docstring.
WindowMaps = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: ``explainer(network)``: a context manager giving a :data:`WindowMaps` for ``network``.
WindowExplainer = Callable[[nn.Module], AbstractContextManager[WindowMaps]]


def checked_target(target_class: int, class_names: Sequence[str]) -> int:
    """``target_class`` as an index into ``class_names``.

    Raises:
        ValueError: not an int, or out of range (the classes are listed).
    """
    if isinstance(target_class, bool) or not isinstance(target_class, (int, np.integer)):
        raise ValueError(f"target_class {target_class!r} must be a class index")
    if not 0 <= int(target_class) < len(class_names):
        raise ValueError(f"target_class {target_class} is out of range 0..{len(class_names) - 1} ({list(class_names)})")
    return int(target_class)


def checked_region(region: np.ndarray | None, shape: Sequence[int]) -> np.ndarray | None:
    """``region`` as a bool array of the scan's ``shape`` (z, y, x), or None.

    Raises:
        ValueError: the region's shape is not the scan's.
    """
    if region is None:
        return None
    mask = np.asarray(region)
    if mask.shape != tuple(shape):
        raise ValueError(f"region shape {mask.shape} must be the scan's shape {tuple(shape)}")
    return mask.astype(bool, copy=False)


def nothing_to_explain(target_class: int, given: bool, shape: Sequence[int]) -> np.ndarray:
    """The all-zero map of a class with no voxel in its region, with a warning saying so."""
    what = "the region has no voxel on the model's grid" if given else f"no voxel is predicted as class {target_class}"
    logger.warning("Grad-CAM: %s; the map is all zeros", what)
    return np.zeros(tuple(shape), dtype=np.float32)
