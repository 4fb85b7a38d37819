"""Inference: slice-batched 2D and sliding-window 3D prediction, device choice, post-processing."""

from .control import Cancelled
from .device import autocast_dtype, select_device
from .engine import Segmentation, context_offsets, postprocess, predict_probabilities, segment

__all__ = [
    "Cancelled",
    "Segmentation",
    "autocast_dtype",
    "context_offsets",
    "postprocess",
    "predict_probabilities",
    "segment",
    "select_device",
]
