"""What a fine-tune reports: one record per optimizer step and the final result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass(frozen=True)
class FinetuneProgress:
    """One optimizer step done.

    Attributes:
        step: steps done so far (1-based); ``total``: steps requested.
        loss: total loss of this step (mean over ranks); ``supervised`` and ``forgetting``
            are its two parts. ``lr``: the learning rate used; ``elapsed``: seconds since start.
    """

    step: int
    total: int
    loss: float
    supervised: float
    forgetting: float
    lr: float
    elapsed: float


@dataclass
class FinetuneResult:
    """What a fine-tune produced.

    Attributes:
        model: the fine-tuned model (eval mode, on the training device, ``.config`` with
            any new classes); not yet saved (see :mod:`~napari_medseg.training.versions`).
        metrics_before / metrics_after:
            :func:`~napari_medseg.training.annotated.annotated_metrics` of the parent and of the
            new model on the annotated voxels (model grid).
        steps_done: optimizer steps taken; ``stopped``: True when a stop request ended it.
        annotated_counts: class name -> annotated voxels (input grids, all images).
        losses: the loss of every step.
        settings: the arguments that shaped the run (JSON data).
        seconds: wall time, preparation and metrics included.
    """

    model: nn.Module
    metrics_before: dict[str, Any]
    metrics_after: dict[str, Any]
    steps_done: int
    stopped: bool
    annotated_counts: dict[str, int]
    losses: list[float] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def meta(self) -> dict[str, Any]:
        """``training`` and ``metrics`` entries for the new bundle's ``meta.json``."""
        training = {
            "kind": "finetune",
            "steps": self.steps_done,
            "stopped": self.stopped,
            "annotated_voxels": dict(self.annotated_counts),
            "loss_first": self.losses[0] if self.losses else None,
            "loss_last": self.losses[-1] if self.losses else None,
            "seconds": round(self.seconds, 2),
            **self.settings,
        }
        metrics = {"annotated_before": self.metrics_before, "annotated_after": self.metrics_after}
        return {"training": training, "metrics": metrics}
