"""Metrics of a model on the annotated voxels of sparse labels (before/after fine-tuning)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import ModelConfig
from ..inference.engine import predict_windows
from ..inference.tiling import context_stack
from . import distributed
from .sampling import TrainingCase

_EVAL_BATCH = 8


def annotated_metrics(confusion: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy and per-class Dice over annotated voxels from a (K, K) confusion matrix.

    ``confusion[t, p]`` counts annotated voxels of class t predicted as p. Dice is given for
    the classes with annotated voxels: 2 |P_k ∩ T_k| / (|P_k| + |T_k|), both counted over the
    annotated voxels only. ``mean_dice`` averages those.
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    total = int(confusion.sum())
    truth, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    dice = {
        name: float(2 * confusion[k, k] / (truth[k] + predicted[k]))
        for k, name in enumerate(class_names)
        if truth[k] > 0
    }
    return {
        "voxels": total,
        "accuracy": float(np.trace(confusion) / total) if total else float("nan"),
        "dice": dice,
        "mean_dice": float(np.mean(list(dice.values()))) if dice else float("nan"),
    }


@torch.inference_mode()
def annotated_confusion(
    model: nn.Module,
    cases: Sequence[TrainingCase],
    config: ModelConfig,
    device: torch.device,
    amp: torch.dtype | None,
    patch: tuple[int, ...],
    context,
) -> np.ndarray:
    """(K, K) confusion over the annotated voxels (summed over ranks, each doing a share).

    2D models predict the annotated slices (whole slices, 2.5D stacks); 3D models predict
    the annotations' bounding box with half a window of margin, by sliding windows.
    """
    k = config.num_classes
    rank, world = (context.rank, context.world_size) if context else (0, 1)
    was_training = model.training
    model.eval()
    confusion = torch.zeros(k * k, dtype=torch.int64)
    try:
        if config.spatial_dims == 2:
            offsets = config.context_offsets
            units = [(c, z) for c, case in enumerate(cases) for z in torch.nonzero(case.labels.flatten(1).any(1)).flatten().tolist()]
            mine = units[rank::world]
            for start in range(0, len(mine), _EVAL_BATCH):
                chunk = mine[start : start + _EVAL_BATCH]
                for c in sorted({c for c, _ in chunk}):
                    index = torch.tensor([z for cc, z in chunk if cc == c])
                    stack = context_stack(cases[c].image, index, offsets).to(device)
                    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                        logits = _whole_slices(model, stack, patch if config.extra.get("external") else None)
                    confusion += _count(cases[c].labels[index], logits.argmax(1).cpu(), k)
        else:
            for case in cases[rank::world]:
                where = torch.nonzero(case.labels)
                if not len(where):
                    continue
                low = [max(0, int(v) - p // 2) for v, p in zip(where.min(0).values, patch)]
                high = [min(n, int(v) + 1 + p // 2) for v, n, p in zip(where.max(0).values, case.labels.shape, patch)]
                box = tuple(slice(a, b) for a, b in zip(low, high))
                probabilities = predict_windows(
                    model, case.image[box].numpy(), patch=patch, overlap=0.25, device=device, amp=amp
                )
                confusion += _count(case.labels[box], torch.from_numpy(probabilities.argmax(0)), k)
    finally:
        model.train(was_training)
    return distributed.all_reduce(confusion, context).reshape(k, k).numpy()


def _whole_slices(model: nn.Module, stack: torch.Tensor, multiple_of: tuple[int, ...] | None) -> torch.Tensor:
    """Logits of (B, C, Y, X) slices; with ``multiple_of`` (an external network's patch,
    which its strides divide) the slices are zero-padded to multiples of it, then cropped."""
    if multiple_of is None:
        return model(stack)
    size = stack.shape[-2:]
    pad = [-n % p for n, p in zip(size, multiple_of)]
    logits = model(torch.nn.functional.pad(stack, (0, pad[1], 0, pad[0])))
    return logits[..., : size[0], : size[1]]


def _count(sparse: torch.Tensor, predicted: torch.Tensor, k: int) -> torch.Tensor:
    annotated = sparse > 0
    truth = sparse[annotated].long() - 1
    return torch.bincount(truth * k + predicted[annotated].long(), minlength=k * k)
