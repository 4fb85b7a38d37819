"""The forgetting guard of fine-tuning: distillation toward the parent (its network's
softmax, or the segmentation it produced) and L2-SP."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..inference.segment import segment
from ..types import Volume


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean KL(teacher || student) of the softmax distributions over the voxels in ``mask``.

    Args:
        student_logits, teacher_logits: (B, K, *S); the student's old-class logits only.
        mask: (B, *S) bool (unannotated voxels inside the volume).

    Returns:
        A scalar (0 with a graph when ``mask`` is empty).
    """
    teacher = torch.softmax(teacher_logits.float(), dim=1)
    log_student = torch.log_softmax(student_logits.float(), dim=1)
    kl = (torch.special.xlogy(teacher, teacher) - teacher * log_student).sum(dim=1)
    weight = mask.to(kl.dtype)
    return (kl * weight).sum() / weight.sum().clamp_min(1.0)


PARENT_SHARE = 0.1


def reference_log_probabilities(
    logits: torch.Tensor, k_old: int, reference: torch.Tensor, parents: torch.Tensor | None = None
) -> torch.Tensor:
    """The student's log-probabilities that :func:`reference_loss` reads at the reference class.

    Without ``parents``: a softmax over the old classes only, i.e. the distribution given
    "not a new class", which never penalises a new class anywhere. With ``parents``
    ((N_new, k_old), the share of each new class's strokes on each old class of the
    reference, :func:`new_class_parents`): at a voxel whose reference class is a parent of
    new class n (at least :data:`PARENT_SHARE` of its strokes; fewer are strokes that
    strayed over a boundary), n stays out of the softmax (free to grow there, as without parents); at
    any other voxel n takes part, so its probability there costs as much as a wrong old
    class. A new class carved out of CSF may grow in what the reference calls CSF, but
    not into grey matter, white matter or background (in the spirit of the unbiased
    distillation of class-incremental segmentation, MiB, Cermelli et al. 2020).

    Args:
        logits: (B, K, *S) with K = k_old + N_new.
        reference: (B, *S) int64 reference classes (-1 where there is none).
    Returns:
        (B, k_old, *S) without parents, else (B, K, *S), float32; index k < k_old is old class k.
    """
    if parents is None or logits.shape[1] == k_old:
        return torch.log_softmax(logits[:, :k_old].float(), dim=1)
    allowed = parents[:, reference.clamp_min(0)] < PARENT_SHARE  # (N_new, B, *S): n counts at this voxel
    new = logits[:, k_old:].float().masked_fill(~allowed.movedim(0, 1), float("-inf"))
    return torch.log_softmax(torch.cat([logits[:, :k_old].float(), new], dim=1), dim=1)


def reference_loss(log_probabilities: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the student toward dense reference classes over ``mask``.

    Args:
        log_probabilities: (B, K', *S), index k < K the parent's class k
            (:func:`reference_log_probabilities`).
        reference: (B, *S) int64 classes in 0..K-1, -1 where there is none.
        mask: (B, *S) bool (unannotated voxels inside the volume).

    Returns:
        A scalar (0 with a graph when no voxel takes part).
    """
    keep = mask & (reference >= 0)
    picked = log_probabilities.gather(1, reference.clamp_min(0).unsqueeze(1)).squeeze(1)
    weight = keep.to(picked.dtype)
    return -(picked * weight).sum() / weight.sum().clamp_min(1.0)


def new_class_parents(labels: list[torch.Tensor], references: list[torch.Tensor], k_old: int, k_new: int) -> torch.Tensor:
    """(k_new - k_old, k_old): for each new class, the share of its strokes that the
    reference segmentation gives to each old class (rows of zeros for a class without
    strokes on the model grid).

    Args:
        labels: per case (Z, Y, X) sparse labels on the model grid (k + 1 = class k).
        references: per case (Z, Y, X) reference classes on the same grid.
    """
    counts = torch.zeros(k_new - k_old, k_old, dtype=torch.float64)
    for sparse, reference in zip(labels, references):
        for n in range(k_new - k_old):
            under = reference[sparse.long() == k_old + n + 1].long()
            counts[n] += torch.bincount(under[(under >= 0) & (under < k_old)], minlength=k_old).double()
    return counts / counts.sum(dim=1, keepdim=True).clamp_min(1.0)


def l2sp_penalty(model: nn.Module, anchors: dict[str, tuple[torch.Tensor, int | None]]) -> torch.Tensor:
    """Sum of squared differences between ``model``'s parameters and their anchors.

    ``anchors`` maps a parameter name to (the parent's value, rows): with rows set, only
    the first ``rows`` entries along axis 0 are compared (the old classes of a grown head).
    """
    total = None
    for name, parameter in model.named_parameters():
        if name not in anchors:
            continue
        anchor, rows = anchors[name]
        current = parameter if rows is None else parameter[:rows]
        term = (current.float() - anchor).pow(2).sum()
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


def anchors(student: nn.Module, k_old: int) -> dict[str, tuple[torch.Tensor, int | None]]:
    """The starting weights (= the parent's); grown head parameters keep their old rows."""
    k_new = student.config.num_classes
    heads = set()
    if k_new != k_old:
        from .heads import head_parameters

        heads = set(head_parameters(student, 1))
    return {
        name: (p.detach().float().clone()[: k_old if name in heads else None], k_old if name in heads else None)
        for name, p in student.named_parameters()
    }


def parent_segmentation(parent: nn.Module, image: Volume, device: torch.device, refine: bool = False) -> np.ndarray:
    """(z, y, x) class indices the parent's whole pipeline (post-processing included, and its
    refinement kept on request with ``refine``) gives ``image``."""
    was_training = parent.training
    try:
        return segment(image, parent, device=device, refine=refine).labels
    finally:
        parent.train(was_training)
