"""Explanations for segmentation models: Grad-CAM and Grad-CAM++ for a class and a region.

``grad_cam(model, image, *, target_class, layer=None, region=None, method="gradcam")``
explains one (C, *S) image; ``grad_cam_volume`` runs it per slice (2D models, with
neighbouring slices as channels) or per blended window (3D models) over a (z, y, x) volume;
``explain_scan`` explains a whole scan on its own grid, also for nnU-Net folders and MONAI
bundles (computed their own way, ``explain_external``).
Importing this package is cheap; torch loads with the first function used.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# The one cancellation exception of the package (torch-free), shared with inference.
from ..control import Cancelled


_LAZY = {
    "grad_cam": "gradcam",
    "grad_cam_volume": "volume",
    "explain_scan": "scan",
    "explain_external": "external",
    "CamMethod": "gradcam",
    "GradCAM": "gradcam",
    "GradCAMPlusPlus": "gradcam",
    "METHODS": "gradcam",
    "CamTarget": "targets",
    "SegmentationTarget": "targets",
    "capture_activations": "hooks",
    "eval_mode": "hooks",
    "tokens_to_grid": "hooks",
}

__all__ = ["Cancelled", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
