"""Segmentation losses over annotated voxels only (dense labels are the special case).

Voxels outside ``annotated`` contribute nothing, not even as background: their gradient
is exactly zero. That is what sparse corrections need (0 = not annotated).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def partial_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    annotated: torch.Tensor | None = None,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy over annotated voxels.

    Args:
        logits: (B, K, *spatial).
        target: (B, *spatial) int64 class indices (any value where not annotated).
        annotated: (B, *spatial) bool; None means every voxel.
        class_weights: (K,) optional weights.

    Returns:
        A scalar; 0 (with a graph) when nothing is annotated.
    """
    safe_target = target.clamp(0, logits.shape[1] - 1)
    per_voxel = F.cross_entropy(logits.float(), safe_target, weight=class_weights, reduction="none")
    if annotated is None:
        return per_voxel.mean()
    weight = annotated.to(per_voxel.dtype)
    return (per_voxel * weight).sum() / weight.sum().clamp_min(1.0)


def partial_soft_dice(
    logits: torch.Tensor,
    target: torch.Tensor,
    annotated: torch.Tensor | None = None,
    smooth: float = 1.0,
) -> torch.Tensor:
    """1 - mean soft Dice over the classes present in the annotated voxels.

    Only annotated voxels enter the sums, so an image annotated for one class does not
    teach that everything else is background.
    """
    k = logits.shape[1]
    probabilities = torch.softmax(logits.float(), dim=1)
    one_hot = F.one_hot(target.clamp(0, k - 1), k).movedim(-1, 1).to(probabilities.dtype)
    if annotated is not None:
        weight = annotated.unsqueeze(1).to(probabilities.dtype)
        probabilities = probabilities * weight
        one_hot = one_hot * weight
    dims = (0,) + tuple(range(2, logits.ndim))
    intersection = (probabilities * one_hot).sum(dims)
    denominator = probabilities.sum(dims) + one_hot.sum(dims)
    present = one_hot.sum(dims) > 0
    if not present.any():
        return logits.sum() * 0.0
    dice = (2 * intersection + smooth) / (denominator + smooth)
    return 1 - dice[present].mean()


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    annotated: torch.Tensor | None = None,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Partial cross-entropy + partial soft Dice (equal weights)."""
    return partial_cross_entropy(logits, target, annotated, class_weights) + partial_soft_dice(
        logits, target, annotated
    )
