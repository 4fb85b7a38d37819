"""What Grad-CAM explains: a target turns a batch of logits into one score per sample.

A new kind of explanation (a class's probability mass, a boundary, a single voxel) is a new
:class:`CamTarget` subclass; the Grad-CAM machinery only calls :meth:`CamTarget.score` and
:meth:`CamTarget.empty`.
"""

from __future__ import annotations

import torch

__all__ = ["CamTarget", "SegmentationTarget"]


class CamTarget:
    """Base class: ``score(logits)`` maps logits (B, K, *S) to scores (B,)."""

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        """Differentiable scores (B,) from logits (B, K, *S)."""
        raise NotImplementedError

    def empty(self, logits: torch.Tensor) -> torch.Tensor:
        """Bool (B,): samples with nothing to explain (their map is all zeros)."""
        return torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)


class SegmentationTarget(CamTarget):
    """Sum of class ``target_class``'s logits over a region.

    Args:
        target_class: index k of the logit channel (0 is background).
        region: bool mask, (*S) for every sample or (B, *S) one per sample; ``None`` means
            the voxels predicted as ``target_class`` (``argmax(logits, 1) == k``).

    Example:
        For 2D logits (2, 3, 40, 32), ``SegmentationTarget(1).score(logits)`` has shape (2,):
        each sample's class-1 logits summed over its own class-1 prediction.
    """

    def __init__(self, target_class: int, region: torch.Tensor | None = None) -> None:
        if isinstance(target_class, bool) or not isinstance(target_class, int):
            try:
                target_class = int(target_class.__index__())
            except (AttributeError, TypeError):
                raise ValueError(f"target_class {target_class!r} must be an int") from None
        if target_class < 0:
            raise ValueError(f"target_class {target_class} must be >= 0")
        self.target_class = target_class
        self.region = None if region is None else torch.as_tensor(region).bool()

    def __repr__(self) -> str:
        where = "predicted" if self.region is None else f"region {tuple(self.region.shape)}"
        return f"SegmentationTarget(target_class={self.target_class}, {where})"

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """Bool mask (B, *S) of the voxels whose logits enter the score.

        Raises:
            ValueError: ``target_class`` is not a channel of ``logits``, or the region's
                shape does not fit the logits' spatial shape.
        """
        b, k, *spatial = logits.shape
        if self.target_class >= k:
            raise ValueError(
                f"target_class {self.target_class} is out of range for {k} output classes"
            )
        if self.region is None:
            return logits.detach().argmax(dim=1) == self.target_class
        region = self.region.to(logits.device)
        if tuple(region.shape) == tuple(spatial):
            return region.expand(b, *spatial)
        if tuple(region.shape) == (b, *spatial):
            return region
        raise ValueError(
            f"region shape {tuple(region.shape)} must be the spatial shape {tuple(spatial)} "
            f"(or {(b, *spatial)} per sample)"
        )

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        mask = self.mask(logits)
        selected = logits[:, self.target_class] * mask.to(logits.dtype)
        return selected.flatten(1).sum(dim=1)

    def empty(self, logits: torch.Tensor) -> torch.Tensor:
        return ~self.mask(logits).flatten(1).any(dim=1)
