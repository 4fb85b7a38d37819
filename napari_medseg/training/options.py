"""Checks of :func:`~napari_medseg.training.finetune.finetune`'s options, so that a bad
value fails when the fine-tune is requested, not at its first step."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..config import ModelConfig

__all__ = ["DISTILL_TARGETS", "FORGETTING", "check_options"]

FORGETTING = ("distill", "l2sp", "distill+l2sp", "none")
DISTILL_TARGETS = ("segmentation", "network")


def check_options(
    config: ModelConfig,
    *,
    images: int,
    label_volumes: int,
    steps: int,
    batch_size: int,
    lr: float,
    forgetting: str,
    distill_target: str,
    distill_weight: float,
    l2sp_weight: float,
    precision: str,
    num_classes: int,
    class_weights: Sequence[float] | None,
    patch: Sequence[int] | None,
) -> None:
    """Raise ValueError naming the first bad option (arguments as ``finetune``'s;
    ``images``/``label_volumes`` are counts, ``num_classes`` includes new classes)."""
    if not images or images != label_volumes:
        raise ValueError(f"{images} images and {label_volumes} label volumes: give one label volume per image (at least one)")
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} {value!r} must be a positive int (at least 1)")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr {lr!r} must be a positive number")
    if forgetting not in FORGETTING:
        raise ValueError(f"forgetting {forgetting!r} must be one of {FORGETTING}")
    if distill_target not in DISTILL_TARGETS:
        raise ValueError(f"distill_target {distill_target!r} must be one of {DISTILL_TARGETS}")
    for name, value in (("distill_weight", distill_weight), ("l2sp_weight", l2sp_weight)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} {value!r} must be a non-negative number")
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision {precision!r} must be auto, bf16 or fp32")
    if class_weights is not None and len(class_weights) != num_classes:
        raise ValueError(f"class_weights {list(class_weights)} must have {num_classes} entries (one per class)")
    if patch is not None and (len(patch) != config.spatial_dims or min(patch) < 1):
        raise ValueError(f"patch {tuple(patch)} must be {config.spatial_dims} positive sizes")
    if config.spatial_dims == 2:
        _ = config.context_offsets  # raises for a 2D config without usable offsets
