"""The forgetting guard of fine-tuning: distillation toward the parent (its network's
softmax, or the segmentation it produced) and L2-SP."""

from __future__ import annotations

import torch
from torch import nn


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


def reference_loss(student_logits: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the student toward dense reference classes over ``mask``.

    Args:
        student_logits: (B, K, *S); the student's old-class logits only.
        reference: (B, *S) int64 classes in 0..K-1, -1 where there is none.
        mask: (B, *S) bool (unannotated voxels inside the volume).

    Returns:
        A scalar (0 with a graph when no voxel takes part).
    """
    keep = mask & (reference >= 0)
    log_student = torch.log_softmax(student_logits.float(), dim=1)
    picked = log_student.gather(1, reference.clamp_min(0).unsqueeze(1)).squeeze(1)
    weight = keep.to(picked.dtype)
    return -(picked * weight).sum() / weight.sum().clamp_min(1.0)


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
