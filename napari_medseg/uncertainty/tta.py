"""Test-time augmentation: flips of the in-plane axes and small intensity perturbations."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .samplers import SampleBatch, Sampler, softmax

__all__ = ["Augmentation", "TTASampler"]


@dataclass(frozen=True)
class Augmentation:
    """One test-time augmentation: intensities to ``scale * sign(x)|x|^gamma``, in-plane flips.

    ``flips`` are tensor dims counted from the end (-1: x, -2: y), valid for 2D (B, C, H, W)
    and 3D (B, C, D, H, W) inputs alike.
    """

    flips: tuple[int, ...] = ()
    gamma: float = 1.0
    scale: float = 1.0

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.gamma != 1.0:
            x = x.sign() * x.abs().pow(self.gamma)
        if self.scale != 1.0:
            x = x * self.scale
        return x.flip(self.flips) if self.flips else x

    def invert(self, probabilities: torch.Tensor) -> torch.Tensor:
        """Map a prediction on the augmented input back to the original layout."""
        return probabilities.flip(self.flips) if self.flips else probabilities


class TTASampler(Sampler):
    """Test-time augmentation: S predictions of flipped and intensity-perturbed copies.

    Sample 0 is the unchanged input; sample i flips the in-plane axes by cycling through
    none, x, y, both, and (i > 0) applies gamma ``exp(U(-log_gamma, log_gamma))`` and a
    scale in ``1 +- scale`` to the normalised intensities. The S augmentations are drawn
    once per run from ``seed``, so one sample is one consistent transform of the volume.

    Args:
        model: the network (with ``.config``).
        n_samples: S.
        log_gamma: half-width of the log-gamma range (default: gamma in about [0.86, 1.16]).
        scale: half-width of the intensity scale range.
    """

    method = "tta"
    FLIPS = ((), (-1,), (-2,), (-2, -1))

    def __init__(
        self, model: nn.Module, n_samples: int = 10, *, seed: int = 0, log_gamma: float = 0.15, scale: float = 0.1
    ) -> None:
        super().__init__([model], n_samples, seed=seed)
        if not 0 <= log_gamma < 1 or not 0 <= scale < 0.5:
            raise ValueError(f"log_gamma {log_gamma!r} must be in [0, 1) and scale {scale!r} in [0, 0.5)")
        self.model = model
        self.log_gamma = log_gamma
        self.scale = scale
        self.augmentations = self._draw()

    def _draw(self) -> list[Augmentation]:
        rng = np.random.default_rng(self.seed)
        out = [Augmentation()]
        for i in range(1, self.n_samples):
            gamma = math.exp(rng.uniform(-self.log_gamma, self.log_gamma))
            scale = 1.0 + rng.uniform(-self.scale, self.scale)
            out.append(Augmentation(self.FLIPS[i % len(self.FLIPS)], gamma, scale))
        return out

    def sample_batch(self, x: torch.Tensor) -> SampleBatch:
        samples = [aug.invert(softmax(self.model(aug.apply(x)))) for aug in self.augmentations]
        return SampleBatch(torch.stack(samples), samples[0])
