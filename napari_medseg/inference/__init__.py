"""Inference: slice-batched 2D and sliding-window 3D prediction, device choice, and
:func:`segment`, the whole path from a scan to its labels."""

from .device import autocast_dtype, select_device
from .engine import predict_probabilities
from .segment import Segmentation, segment

__all__ = [
    "Segmentation",
    "autocast_dtype",
    "predict_probabilities",
    "segment",
    "select_device",
]
