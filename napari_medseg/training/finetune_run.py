"""The fine-tune engine: a run is started (state built), stepped, and finished.

:class:`FinetuneRun` holds everything one fine-tune needs between steps: the student (a
deep copy of the parent, its head grown for new classes), the teacher or the reference
segmentations of the forgetting guard, the window sampler, the optimizer and its
learning-rate scheduler. :meth:`~FinetuneRun.step` takes one optimizer step,
:meth:`~FinetuneRun.finish` evaluates and returns the :class:`FinetuneResult`.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from ..config import ModelConfig
from ..control import StopCheck
from ..inference.device import training_autocast_dtype
from ..models.external import is_external
from ..postprocess.finetuned import finetuned_config, mixture_note
from ..types import Volume
from . import distributed
from .annotated import annotated_confusion, annotated_metrics
from .forgetting import anchors as parent_anchors
from .forgetting import (
    distillation_loss,
    l2sp_penalty,
    new_class_parents,
    parent_segmentation,
    reference_log_probabilities,
    reference_loss,
)
from .heads import grow_head
from .losses import partial_cross_entropy, segmentation_loss
from .options import FinetuneOptions
from .records import FinetuneProgress, FinetuneResult
from .sampling import PatchSampler, augment_batch, default_patch, flip_dim, prepare_case, prepare_external_case

__all__ = ["FinetuneRun", "warmup_cosine"]

logger = logging.getLogger(__name__)


def warmup_cosine(step: int, steps: int, warmup: int) -> float:
    """Learning-rate factor of step ``step`` (0-based): linear warm-up over ``warmup``
    steps, then a cosine decay to 0.1 at ``steps``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


class FinetuneRun:
    """One fine-tune between its start and its result (see the module docstring).

    Args:
        parent: the model to fine-tune (never modified).
        images, sparse_labels: checked inputs (see
            :func:`~napari_medseg.training.finetune.finetune`).
        references: the segmentations kept away from the strokes, one per image, or None
            (the parent's own, computed here when the options keep toward a segmentation).
        options: checked :class:`FinetuneOptions`.
    """

    def __init__(
        self,
        parent: nn.Module,
        images: Sequence[Volume],
        sparse_labels: Sequence[np.ndarray],
        references: Sequence[np.ndarray] | None,
        options: FinetuneOptions,
    ) -> None:
        self.started = time.perf_counter()
        self.parent, self.options = parent, options
        self.context = distributed.current(options.device)
        self.device = self.context.device if self.context is not None else _device(options.device)
        self.rank = self.context.rank if self.context else 0
        self.k_old = parent.config.num_classes
        self.external = is_external(parent)
        self._build_models()
        self.references_given = references is not None
        self._prepare_cases(images, sparse_labels, references)
        self.amp = training_autocast_dtype(self.device, options.precision)
        self.weights = None
        if options.class_weights is not None:
            self.weights = torch.tensor(options.class_weights, dtype=torch.float32, device=self.device)
        self.metrics_before = self._metrics(self.teacher)
        if not options.distills or self.anchored:
            self.teacher = None  # only needed for the metrics before
        self.parents = self._new_class_parents()
        self._build_optimizer()
        self.losses: list[float] = []
        self.steps_done = 0
        self.stopped = False

    # --- start ------------------------------------------------------------------------------
    def _build_models(self) -> None:
        options, parent = self.options, self.parent
        if self.external:  # its one trained network (an nnU-Net folder: one fold), in its own layout
            student = parent.training_copy()
            self.teacher = copy.deepcopy(student).to(self.device).eval().requires_grad_(False)
        else:
            self.teacher = copy.deepcopy(parent).to(self.device).eval().requires_grad_(False)
            student = grow_head(copy.deepcopy(parent), options.new_classes, colors=options.new_class_colors, seed=options.seed)
        for attribute in ("bundle_meta", "bundle_path"):  # the new model is not the parent's bundle
            if hasattr(student, attribute):
                delattr(student, attribute)
        self.student = student.to(self.device).requires_grad_(True)
        self.config: ModelConfig = student.config

    def _prepare_cases(self, images, sparse_labels, references) -> None:
        options, config = self.options, self.config
        if options.kept_toward_segmentation:
            references = references or [parent_segmentation(self.parent, image, self.device, options.refine) for image in images]
        else:
            references = [None] * len(images)
        self.anchored = references[0] is not None
        patches = []
        if self.external:  # the model's own library maps scan and strokes onto its network's grid
            self.cases, patches = [], []
            for image, labels, reference in zip(images, sparse_labels, references):
                case, patch = prepare_external_case(self.parent, image, labels, seed=options.seed, reference=reference)
                self.cases.append(case)
                patches.append(patch)
        else:
            self.cases = [
                prepare_case(image, labels, config, seed=options.seed, reference=reference)
                for image, labels, reference in zip(images, sparse_labels, references)
            ]
        self.counts = sum(case.counts for case in self.cases)
        if not self.counts.any():
            raise ValueError("the label volumes hold no annotated voxel (0 = not annotated, k+1 = class k)")
        offsets = config.context_offsets if config.spatial_dims == 2 else (0,)
        # an external network's window is its own patch, whole (windows past the scan are padded)
        self.window = options.patch or (patches[0] if patches else default_patch(config, [c.scan_shape for c in self.cases]))
        self.sampler = PatchSampler(
            self.cases, spatial_dims=config.spatial_dims, patch=self.window, offsets=offsets,
            context_fraction=options.context_fraction, seed=options.seed + 7919 * self.rank,
        )  # fmt: skip
        self.generator = torch.Generator().manual_seed(2 * options.seed + 1 + 104729 * self.rank)
        self.flip = None if self.external else flip_dim(config)  # an external grid's left-right axis is unknown

    def _new_class_parents(self) -> torch.Tensor | None:
        """Per new class, the old classes its strokes were painted on (toward a segmentation)."""
        if not self.anchored or self.config.num_classes <= self.k_old:
            self.new_class_shares = None
            return None
        parents = new_class_parents(
            [c.labels for c in self.cases], [c.reference for c in self.cases], self.k_old, self.config.num_classes
        )
        self.new_class_shares = {
            name: {old: round(float(share), 4) for old, share in zip(self.config.class_names, row) if share > 0}
            for name, row in zip(self.config.class_names[self.k_old :], parents)
        }
        return parents.to(self.device)

    def _build_optimizer(self) -> None:
        options = self.options
        self.anchors = parent_anchors(self.student, self.k_old) if options.anchors_weights else None
        self.optimizer = torch.optim.AdamW(
            self.student.parameters(), lr=options.lr, weight_decay=0.0 if self.anchors is not None else 1e-4
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: warmup_cosine(step, options.steps, options.warmup)
        )
        self.trained = distributed.wrap(self.student, self.context)
        _train_mode(self.student)

    def _metrics(self, model: nn.Module) -> dict[str, Any]:
        confusion = annotated_confusion(model, self.cases, self.config, self.device, self.amp, self.window, self.context)
        return annotated_metrics(confusion, self.config.class_names)

    # --- steps ------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.stopped or self.steps_done >= self.options.steps

    def stop_requested(self, should_stop: StopCheck) -> bool:
        """Whether any rank was asked to stop; then the run is marked stopped."""
        if distributed.any_rank(should_stop is not None and bool(should_stop()), self.context):
            self.stopped = True
        return self.stopped

    @contextmanager
    def seeded(self) -> Iterator[None]:
        """Dropout draws from torch's global generator: seeded for the run, restored after."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.options.seed + 104729 * self.rank)
            yield

    def step(self) -> FinetuneProgress:
        """One optimizer step on a fresh batch of windows."""
        options = self.options
        lr = self.scheduler.get_last_lr()[0]
        batch = self.sampler.sample(options.batch_size)
        if options.augment:
            batch = augment_batch(batch, self.generator, flip=self.flip)
        batch = batch.to(self.device)
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            output = self.trained(batch.image)
            outputs = output if isinstance(output, (tuple, list)) else (output,)
            teacher_logits = None
            if self.teacher is not None:
                with torch.no_grad():
                    teacher_logits = self.teacher(batch.image)
        supervised = supervised_loss(outputs, batch, self.weights, dice=options.stroke_loss == "ce+dice")
        guard = self._guard(outputs[0], batch, teacher_logits)
        loss = supervised + guard
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        parts = torch.stack([loss.detach(), supervised.detach(), guard.detach()]).float()
        parts = distributed.all_reduce(parts, self.context, op="mean").cpu().tolist()
        self.losses.append(parts[0])
        self.steps_done += 1
        return FinetuneProgress(
            step=self.steps_done, total=options.steps, loss=parts[0], supervised=parts[1], forgetting=parts[2],
            lr=lr, elapsed=time.perf_counter() - self.started,
        )  # fmt: skip

    def _guard(self, logits: torch.Tensor, batch, teacher_logits: torch.Tensor | None) -> torch.Tensor:
        """The forgetting guard's loss on the unannotated voxels of the batch."""
        options = self.options
        guard = logits.new_zeros(()).float()
        unannotated = batch.valid & ~batch.annotated
        if teacher_logits is not None:
            guard = guard + options.distill_weight * distillation_loss(logits[:, : self.k_old], teacher_logits, unannotated)
        elif batch.reference is not None:  # only set when keeping toward a segmentation
            log_probabilities = reference_log_probabilities(logits, self.k_old, batch.reference, self.parents)
            guard = guard + options.distill_weight * reference_loss(log_probabilities, batch.reference, unannotated)
        if self.anchors is not None:
            guard = guard + options.l2sp_weight * l2sp_penalty(self.student, self.anchors)
        return guard

    # --- finish -----------------------------------------------------------------------------
    def finish(self) -> FinetuneResult:
        """Evaluate the student and return the result (the model, not yet saved)."""
        student, options = self.student, self.options
        student.eval()
        if self.external:
            student.keep_trained_weights()
        student.config = finetuned_config(student.config, anchored=self.anchored, steps=self.steps_done)
        metrics_after = self._metrics(student)
        del self.trained, self.teacher, self.optimizer, self.scheduler
        result = FinetuneResult(
            model=student,
            metrics_before=self.metrics_before,
            metrics_after=metrics_after,
            steps_done=self.steps_done,
            stopped=self.stopped,
            annotated_counts={name: int(n) for name, n in zip(self.config.class_names, self.counts)},
            losses=self.losses,
            settings=self.record(),
            seconds=time.perf_counter() - self.started,
        )
        logger.info(
            "fine-tuned %d/%d steps in %.1f s: accuracy on annotated voxels %.3f -> %.3f",
            self.steps_done, options.steps, result.seconds, self.metrics_before["accuracy"], metrics_after["accuracy"],
        )  # fmt: skip
        return result

    def record(self) -> dict[str, Any]:
        """Provenance of the run: its options and what it found (JSON data)."""
        options = self.options
        record = {
            **options.record(),
            "images": len(self.cases),
            # what the guard kept away from the strokes: the segmentation given, or the parent's own
            "distill_reference": None if not options.kept_toward_segmentation
            else ("given" if self.references_given else "parent segmentation" + (", refined" if options.refine else "")),
            "patch": list(self.window),
            "precision": "bf16" if self.amp is not None else "fp32",
            "device": str(self.device),
            "world_size": self.context.world_size if self.context else 1,
            "postprocess_note": mixture_note(
                self.parent.config, self.student.config, anchored=self.anchored, steps=self.steps_done
            ),
        }  # fmt: skip
        if self.new_class_shares is not None:
            record["new_class_parents"] = self.new_class_shares
        if getattr(self.student, "active_fold", None) is not None:  # an nnU-Net folder: the fold trained
            record["fold"] = self.student.active_fold
        return record


def supervised_loss(outputs: Sequence[torch.Tensor], batch, weights: torch.Tensor | None, *, dice: bool = False) -> torch.Tensor:
    """Partial CE (+ partial soft Dice with ``dice``) on the annotated voxels; deep-supervision
    outputs weighted 1/2^i."""
    loss = segmentation_loss if dice else partial_cross_entropy
    total = None
    norm = 0.0
    for i, logits in enumerate(outputs):
        term = loss(logits.float(), batch.target, batch.annotated, weights) / 2**i
        total = term if total is None else total + term
        norm += 1 / 2**i
    return total / norm


def _device(device) -> torch.device:
    from ..models.bundle import resolve_device

    return resolve_device(device)


def _train_mode(model: nn.Module) -> None:
    """Training mode, except batch-norm layers keep the parent's running statistics."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
