"""Fine-tuning a model on sparse corrections: a stoppable generator and a callback wrapper.

``finetune(parent, images, sparse_labels, ...)`` returns a generator: iterate it to train,
one :class:`FinetuneProgress` per optimizer step; its return value (``StopIteration.value``,
or use :func:`run_finetune`) is a :class:`FinetuneResult` holding the new model. The parent
is never modified: the engine trains a deep copy (its output head grown by
:func:`~napari_medseg.training.heads.grow_head` when ``new_classes`` are given) and keeps
another frozen copy as the teacher of the forgetting guard.

Each step (see :mod:`~napari_medseg.training.sampling` for the windows):

- supervised loss: partial cross-entropy + partial soft Dice over the annotated voxels only
  (:func:`~napari_medseg.training.losses.segmentation_loss`); unannotated voxels get no
  gradient from it;
- forgetting guard (``forgetting``): ``"distill"`` adds ``distill_weight`` x a distillation
  term over the *unannotated* voxels inside the volume, on the parent's K classes, toward
  (``distill_target``) the parent's *segmentation* of each image, post-processing included
  (cross-entropy to those labels, the default: what the annotator saw and corrected), or the
  parent *network*'s softmax (KL divergence). With new classes the model's distribution over the
  old classes is taken conditional on "not a new class" (softmax over the old logits), so
  the guard keeps what the parent knew without forbidding the new class anywhere; toward
  the segmentation, a new class is kept out of the softmax only where the segmentation
  says one of the classes its strokes were painted on (``reference_log_probabilities``):
  painted on CSF, it may grow in CSF but costs like a wrong class elsewhere;
  ``"l2sp"`` adds ``l2sp_weight`` x the squared distance of the weights to the parent's
  (L2-SP; the new head rows are free); ``"distill+l2sp"`` both; ``"none"`` neither.
- AdamW, a linear warm-up of a few steps then a cosine decay to 10% of ``lr``; batch-norm
  statistics stay frozen at the parent's (small batches).

Measured on toy volumes (tiny U-Nets, fp32, CPU): argmax agreement with the parent on the
unannotated voxels after 10 steps rose from 0.913 (no guard) to 0.955 with distillation
(``tests/training/test_finetune.py``). Where the strokes *correct* the parent (a structure it
called white matter marked as grey matter on 2 of 8 slices, 40 steps), agreement away from
that structure was 0.955 without a guard, 0.9997 with distillation (weight 1) and 0.988
with L2-SP (weight 0.01), but the correction spread less to the structure's unannotated
voxels: Dice 0.91 without a guard, 0.62 with distillation, 0.90 with L2-SP 0.01. The guard
trades spreading a correction for stability.

On real corrections (``bench/correction_loop.py``: the default brain U-Net on a scan it
never saw, 3 rounds of simulated strokes on about 0.36% of the brain, 200 steps each) the
network's own mean tissue Dice went from 0.62 to 0.85 with distillation at weight 1, 0.82
at 0.2, 0.72 with L2-SP 0.01 and 0.67 without a guard: unguarded, the model drifts where
there are no strokes and later rounds undo earlier gains. A new class taught on 3 slices
reached Dice 0.74 on the other slices with distillation at weight 1 and about 0.4 without
it, which supports the default, distillation at weight 1.

Distilling toward the parent network leaves the labels users get unchanged when the
parent's post-processing decides the tissue from the scan's intensities (the shipped brain
models). Distilling toward the parent's segmentation teaches the network those labels
plus the corrections; the new version then gives its network a say in the post-processing
(:mod:`~napari_medseg.postprocess.finetuned`), and the labels users get improve:
see the README's correction-loop table.

Under ``torchrun`` (an initialised process group) the model is wrapped in
DistributedDataParallel, each rank samples with its own seed, the reported losses and the
metrics are averaged over ranks and a stop request is agreed by all ranks (see
:mod:`~napari_medseg.training.distributed`).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import ModelConfig
from ..control import StopCheck
from ..inference.device import training_autocast_dtype
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
from .losses import segmentation_loss
from .options import DISTILL_TARGETS, FORGETTING, check_options
from .records import FinetuneProgress, FinetuneResult
from .sampling import (
    PatchSampler,
    augment_batch,
    check_reference,
    check_sparse_labels,
    default_patch,
    flip_dim,
    prepare_case,
)

__all__ = [
    "DISTILL_TARGETS",
    "FORGETTING",
    "FinetuneProgress",
    "FinetuneResult",
    "annotated_metrics",
    "distillation_loss",
    "finetune",
    "l2sp_penalty",
    "require_annotations",
    "run_finetune",
]

logger = logging.getLogger(__name__)


def run_finetune(
    parent: nn.Module,
    images: Sequence[Volume],
    sparse_labels: Sequence[np.ndarray],
    *,
    progress: Callable[[FinetuneProgress], None] | None = None,
    should_stop: StopCheck = None,
    **options: Any,
) -> FinetuneResult:
    """:func:`finetune` run to the end; ``progress(record)`` is called after every step."""
    steps = finetune(parent, images, sparse_labels, should_stop=should_stop, **options)
    while True:
        try:
            record = next(steps)
        except StopIteration as done:
            return done.value
        if progress is not None:
            progress(record)


def require_annotations(sparse_labels: Sequence[np.ndarray], names: Sequence[object]) -> None:
    """Refuse sparse label volumes that hold no annotated voxel at all (before any inference).

    Args:
        sparse_labels: (z, y, x) arrays, 0 = not annotated.
        names: one name per volume for the message (files, or "labels of image 0").

    Raises:
        ValueError: every volume is all zero; the message names them.
    """
    if not any(np.any(np.asarray(labels)) for labels in sparse_labels):
        listed = ", ".join(str(name) for name in names)
        raise ValueError(
            f"{listed}: no annotated voxel (all values 0 = not annotated; k+1 marks class k); paint at least one stroke"
        )


def finetune(
    parent: nn.Module,
    images: Sequence[Volume],
    sparse_labels: Sequence[np.ndarray],
    *,
    steps: int = 200,
    lr: float = 1e-3,
    batch_size: int = 4,
    new_classes: Sequence[str] = (),
    new_class_colors: Sequence[str] | None = None,
    device: str | torch.device | None = "auto",
    precision: str = "auto",
    forgetting: str = "distill",
    distill_weight: float = 1.0,
    distill_target: str = "segmentation",
    references: Sequence[np.ndarray] | None = None,
    l2sp_weight: float = 0.01,
    warmup_steps: int | None = None,
    patch: Sequence[int] | None = None,
    context_fraction: float = 0.25,
    augment: bool = True,
    class_weights: Sequence[float] | None = None,
    seed: int = 0,
    should_stop: StopCheck = None,
) -> Generator[FinetuneProgress, None, FinetuneResult]:
    """Fine-tune a copy of ``parent`` on sparse labels; a generator of progress records.

    Arguments are checked here (errors are raised by this call, not by the first ``next``);
    nothing runs until the generator is iterated.

    Args:
        parent: a model with ``.config`` (e.g. from :func:`~napari_medseg.models.load_model`);
            never modified.
        images: volumes (z, y, x), any orientation and spacing.
        sparse_labels: one (z, y, x) integer array per image, on the image's grid:
            0 = not annotated, k + 1 = class k (the parent's classes, then ``new_classes``).
        steps: optimizer steps.
        lr: peak learning rate (AdamW).
        batch_size: windows per step (per process under torchrun).
        new_classes: names of classes the parent lacks, in order: label value K + 1 + i
            means ``new_classes[i]`` (K = the parent's class count, background included).
        new_class_colors: their colours (default: the next free palette colours).
        device: ``"auto"`` (cuda, mps, cpu), ``"cpu"``, ``"cuda"``...; ignored under
            torchrun (each process uses its own device).
        precision: ``"auto"`` (bf16 autocast on CUDA GPUs that support it, else fp32),
            ``"bf16"`` or ``"fp32"``.
        forgetting: one of :data:`FORGETTING` (see the module docstring).
        distill_weight, l2sp_weight: weights of the forgetting terms.
        distill_target: what distillation keeps on the unannotated voxels, one of
            :data:`DISTILL_TARGETS`: ``"network"``, the parent network's softmax;
            ``"segmentation"``, the labels the parent's whole pipeline produces for each
            image (post-processing included: what the annotator saw and corrected).
        references: with ``distill_target="segmentation"``, one (z, y, x) integer array of
            the parent's classes per image, on the image's grid: the segmentation the
            annotator corrected, when it is not the parent's own (e.g. edited by hand).
            Default: the parent's segmentation, computed here (one inference per image).
        warmup_steps: linear warm-up steps (default: steps // 10, between 1 and 10).
        patch: training window, (py, px) for 2D or (pz, py, px) for 3D models (default
            :func:`~napari_medseg.training.sampling.default_patch`).
        context_fraction: share of windows drawn at random rather than on a stroke.
        augment: light bias-field / gamma / noise / left-right flip augmentation.
        class_weights: cross-entropy weight per class (old and new classes).
        seed: seeds sampling, augmentation and the new head rows.
        should_stop: called before every step; True ends the run cleanly (the result is
            still returned, with ``stopped=True``).

    Yields:
        :class:`FinetuneProgress` after each step.

    Returns:
        :class:`FinetuneResult` (the generator's return value).

    Raises:
        ValueError: mismatched inputs, labels outside the class range, no strokes, fewer
            than 1 step, a bad option (the message quotes it); all raised before any
            inference or training.
    """
    from ..models.external import refuse_external

    refuse_external(parent, "fine-tuning")
    config = getattr(parent, "config", None)
    if not isinstance(config, ModelConfig):
        raise ValueError(f"parent model {type(parent).__name__} has no .config (a ModelConfig)")
    images, sparse_labels = list(images), list(sparse_labels)
    num_classes = config.num_classes + len(tuple(new_classes))
    if isinstance(steps, int) and not isinstance(steps, bool) and steps < 1:  # other bad values: check_options
        raise ValueError(f"steps {steps} must be at least 1: a new version needs training")
    check_options(
        config, images=len(images), label_volumes=len(sparse_labels), steps=steps, batch_size=batch_size, lr=lr,
        forgetting=forgetting, distill_target=distill_target, distill_weight=distill_weight, l2sp_weight=l2sp_weight,
        precision=precision, num_classes=num_classes, class_weights=class_weights, patch=patch,
    )  # fmt: skip
    if references is not None:
        references = list(references)
        if distill_target != "segmentation" or len(references) != len(images):
            raise ValueError(
                f"references ({len(references)}) need distill_target='segmentation' and one per image ({len(images)})"
            )
        references = [
            check_reference(reference, image.shape, config.num_classes, where=f"reference {i}")
            for i, (image, reference) in enumerate(zip(images, references))
        ]
    sparse_labels = [
        check_sparse_labels(labels, image.shape, num_classes, where=f"labels of image {i}")
        for i, (image, labels) in enumerate(zip(images, sparse_labels))
    ]
    require_annotations(sparse_labels, [f"labels of image {i}" for i in range(len(sparse_labels))])
    settings = {
        "steps_requested": steps,
        "lr": float(lr),
        "batch_size": batch_size,
        "new_classes": list(new_classes),
        "forgetting": {
            "method": forgetting, "distill_weight": float(distill_weight), "distill_target": distill_target,
            "l2sp_weight": float(l2sp_weight),
        },  # fmt: skip
        "context_fraction": float(context_fraction),
        "augment": bool(augment),
        "seed": int(seed),
        "images": len(images),
        # what the guard kept away from the strokes: the segmentation given, or the parent's own
        "distill_reference": None if distill_target != "segmentation" else ("given" if references else "parent segmentation"),
    }
    return _run(
        parent, images, sparse_labels, references, settings=settings, new_class_colors=new_class_colors, device=device,
        precision=precision, warmup_steps=warmup_steps, patch=patch, class_weights=class_weights,
        should_stop=should_stop,
    )  # fmt: skip


def _run(
    parent: nn.Module,
    images: list[Volume],
    sparse_labels: list[np.ndarray],
    given_references: list[np.ndarray] | None,
    *,
    settings: dict[str, Any],
    new_class_colors,
    device,
    precision: str,
    warmup_steps: int | None,
    patch,
    class_weights,
    should_stop: StopCheck,
) -> Generator[FinetuneProgress, None, FinetuneResult]:
    started = time.perf_counter()
    context = distributed.current(device)
    if context is not None:
        torch_device = context.device
    else:
        from ..models.bundle import resolve_device

        torch_device = resolve_device(device)
    rank = context.rank if context else 0
    seed, steps = settings["seed"], settings["steps_requested"]
    forgetting = settings["forgetting"]
    method = forgetting["method"]

    k_old = parent.config.num_classes
    teacher = copy.deepcopy(parent).to(torch_device).eval().requires_grad_(False)
    student = copy.deepcopy(parent)
    student = grow_head(student, settings["new_classes"], colors=new_class_colors, seed=seed)
    for attribute in ("bundle_meta", "bundle_path"):  # the new model is not the parent's bundle
        if hasattr(student, attribute):
            delattr(student, attribute)
    student.to(torch_device).requires_grad_(True)
    config: ModelConfig = student.config

    use_distill = method in ("distill", "distill+l2sp") and forgetting["distill_weight"] > 0
    references = [None] * len(images)
    if use_distill and forgetting["distill_target"] == "segmentation":
        references = given_references or [parent_segmentation(parent, image, torch_device) for image in images]
    cases = [
        prepare_case(image, labels, config, seed=seed, reference=reference)
        for image, labels, reference in zip(images, sparse_labels, references)
    ]
    counts = sum(case.counts for case in cases)
    if not counts.any():
        raise ValueError("the label volumes hold no annotated voxel (0 = not annotated, k+1 = class k)")
    offsets = config.context_offsets if config.spatial_dims == 2 else (0,)
    window = tuple(patch) if patch is not None else default_patch(config, [c.scan_shape for c in cases])
    sampler = PatchSampler(
        cases, spatial_dims=config.spatial_dims, patch=window, offsets=offsets,
        context_fraction=settings["context_fraction"], seed=seed + 7919 * rank,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(2 * seed + 1 + 104729 * rank)
    flip = flip_dim(config)
    amp = training_autocast_dtype(torch_device, precision)
    weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32, device=torch_device)
    settings = {
        **settings,
        "patch": list(window),
        "precision": "bf16" if amp is not None else "fp32",
        "device": str(torch_device),
        "world_size": context.world_size if context else 1,
    }

    metrics_before = annotated_metrics(
        annotated_confusion(teacher, cases, config, torch_device, amp, window, context), config.class_names
    )
    if not use_distill or references[0] is not None:
        teacher = None  # only needed for the metrics before
    parents = None
    if references[0] is not None and config.num_classes > k_old:
        parents = new_class_parents([c.labels for c in cases], [c.reference for c in cases], k_old, config.num_classes)
        settings["new_class_parents"] = {
            name: {old: round(float(share), 4) for old, share in zip(config.class_names, row) if share > 0}
            for name, row in zip(config.class_names[k_old:], parents)
        }
        parents = parents.to(torch_device)
    anchors = parent_anchors(student, k_old) if method in ("l2sp", "distill+l2sp") and forgetting["l2sp_weight"] > 0 else None
    optimizer = torch.optim.AdamW(
        student.parameters(), lr=settings["lr"], weight_decay=0.0 if anchors is not None else 1e-4
    )
    warmup = warmup_steps if warmup_steps is not None else max(1, min(10, steps // 10))
    trained = distributed.wrap(student, context)
    _train_mode(student)

    losses: list[float] = []
    stopped = False
    steps_done = 0
    # dropout draws from torch's global generator: seed it for the run, restore it after
    with torch.random.fork_rng(devices=[torch_device] if torch_device.type == "cuda" else []):
        torch.manual_seed(seed + 104729 * rank)
        for step in range(steps):
            if distributed.any_rank(should_stop is not None and bool(should_stop()), context):
                stopped = True
                break
            lr = _learning_rate(settings["lr"], step, steps, warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = sampler.sample(settings["batch_size"])
            if settings["augment"]:
                batch = augment_batch(batch, generator, flip=flip)
            batch = batch.to(torch_device)
            with torch.autocast(torch_device.type, dtype=amp or torch.float32, enabled=amp is not None):
                output = trained(batch.image)
                outputs = output if isinstance(output, (tuple, list)) else (output,)
                teacher_logits = None
                if teacher is not None:
                    with torch.no_grad():
                        teacher_logits = teacher(batch.image)
            supervised = _supervised_loss(outputs, batch, weights)
            guard = outputs[0].new_zeros(()).float()
            unannotated = batch.valid & ~batch.annotated
            if teacher_logits is not None:
                guard = guard + forgetting["distill_weight"] * distillation_loss(outputs[0][:, :k_old], teacher_logits, unannotated)
            elif batch.reference is not None:  # only set when distilling toward the segmentation
                log_probabilities = reference_log_probabilities(outputs[0], k_old, batch.reference, parents)
                guard = guard + forgetting["distill_weight"] * reference_loss(log_probabilities, batch.reference, unannotated)
            if anchors is not None:
                guard = guard + forgetting["l2sp_weight"] * l2sp_penalty(student, anchors)
            loss = supervised + guard
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            parts = torch.stack([loss.detach(), supervised.detach(), guard.detach()]).float()
            parts = distributed.all_reduce(parts, context, op="mean").cpu().tolist()
            losses.append(parts[0])
            steps_done = step + 1
            yield FinetuneProgress(
                step=steps_done, total=steps, loss=parts[0], supervised=parts[1], forgetting=parts[2],
                lr=lr, elapsed=time.perf_counter() - started,
            )  # fmt: skip

    student.eval()
    anchored = references[0] is not None
    student.config = finetuned_config(student.config, anchored=anchored, steps=steps_done)
    settings["postprocess_note"] = mixture_note(parent.config, student.config, anchored=anchored, steps=steps_done)
    metrics_after = annotated_metrics(
        annotated_confusion(student, cases, config, torch_device, amp, window, context), config.class_names
    )
    del trained, teacher, optimizer
    result = FinetuneResult(
        model=student,
        metrics_before=metrics_before,
        metrics_after=metrics_after,
        steps_done=steps_done,
        stopped=stopped,
        annotated_counts={name: int(n) for name, n in zip(config.class_names, counts)},
        losses=losses,
        settings=settings,
        seconds=time.perf_counter() - started,
    )
    logger.info(
        "fine-tuned %d/%d steps in %.1f s: accuracy on annotated voxels %.3f -> %.3f",
        steps_done, steps, result.seconds, metrics_before["accuracy"], metrics_after["accuracy"],
    )  # fmt: skip
    return result


def _supervised_loss(outputs: Sequence[torch.Tensor], batch, weights: torch.Tensor | None) -> torch.Tensor:
    """Partial CE + Dice on the annotated voxels; deep-supervision outputs weighted 1/2^i."""
    total = None
    norm = 0.0
    for i, logits in enumerate(outputs):
        term = segmentation_loss(logits.float(), batch.target, batch.annotated, weights) / 2**i
        total = term if total is None else total + term
        norm += 1 / 2**i
    return total / norm


# --- helpers ------------------------------------------------------------------------------
def _learning_rate(peak: float, step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _train_mode(model: nn.Module) -> None:
    """Training mode, except batch-norm layers keep the parent's running statistics."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
