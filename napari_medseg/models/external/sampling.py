"""What the external models share to draw uncertainty samples: the methods each one offers,
their dropout, flipped networks and per-sample progress (the seeded random state is
:mod:`napari_medseg.models.seeded_random`, shared with our own samplers).

An external model (:class:`~.nnunet_model.NnUNetModel`,
:class:`~.monai_model.MonaiBundleModel`) draws its samples the way its users know it
(nnU-Net: folds and mirroring; MONAI: flips of the roi, dropout) through two methods:
``sample_count(method, samples)`` says how many samples a method gives, or raises
:class:`~.errors.ExternalModelError` naming the model and why it cannot, before any work;
``sample_probabilities(...)`` yields them one by one, each (K, z, y, x) float32 on the
scan's own grid, so that a caller can accumulate them without holding S volumes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ...control import ProgressCallback, report
from .errors import ExternalModelError

__all__ = ["SAMPLING_METHODS", "Flipped", "active_dropout", "check_method", "dropout_layers",
           "flip_sets", "require_dropout", "sample_progress"]  # fmt: skip

SAMPLING_METHODS = ("mc-dropout", "tta", "ensemble")
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def check_method(method: str, samples: int) -> None:
    """Raise ValueError for an unknown ``method`` or a ``samples`` that is not a positive int."""
    if method not in SAMPLING_METHODS:
        raise ValueError(f"method {method!r} must be one of {SAMPLING_METHODS}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples {samples!r} must be a positive int")


def dropout_layers(network: nn.Module) -> list[nn.Module]:
    """The dropout modules of ``network`` whose probability ``p`` is above 0."""
    return [m for m in network.modules() if isinstance(m, _DROPOUT) and float(getattr(m, "p", 0.0)) > 0.0]


def require_dropout(network: nn.Module, path: object, name: str) -> None:
    """Raise unless ``network`` (named ``name``) has dropout with p > 0 for MC dropout.

    Raises:
        ExternalModelError: naming the model and the dropout it has (none, or only p = 0).
    """
    if dropout_layers(network):
        return
    zero = [type(m).__name__ for m in network.modules() if isinstance(m, _DROPOUT)]
    found = f"its {len(zero)} dropout modules all have p = 0" if zero else "it has no dropout modules"
    raise ExternalModelError(path, f"mc-dropout needs dropout in the network, and {name} has none ({found}); "
                             "use --uncertainty tta instead")  # fmt: skip


@contextmanager
def active_dropout(network: nn.Module) -> Iterator[None]:
    """Dropout modules with p > 0 in training mode, everything else in eval mode; every
    module's own flag is restored on exit."""
    saved = [(m, m.training) for m in network.modules()]
    try:
        network.eval()
        for module in dropout_layers(network):
            module.train()
        yield
    finally:
        for module, training in saved:
            module.training = training


def flip_sets(axes: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every subset of ``axes`` (tensor axes), the empty one (no flip) first."""
    return [c for n in range(len(axes) + 1) for c in itertools.combinations(axes, n)]


class Flipped(nn.Module):
    """``network`` seeing its input flipped over ``axes`` (tensor axes of (B, C, *S)), its
    output flipped back: one test-time augmentation."""

    def __init__(self, network: nn.Module, axes: tuple[int, ...]) -> None:
        super().__init__()
        self.network, self.axes = network, tuple(axes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.axes:
            return self.network(x)
        return torch.flip(self.network(torch.flip(x, self.axes)), self.axes)


def sample_progress(progress: ProgressCallback, index: int, count: int) -> ProgressCallback:
    """``progress`` for sample ``index`` of ``count``: (done, total) of one sample's windows
    become (done over all samples, total over all samples)."""
    if progress is None:
        return None
    return lambda done, total: report(progress, index * total + done, count * total)

