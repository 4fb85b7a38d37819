"""The optimisation step shared by the training scripts of the shipped brain models."""

from __future__ import annotations

import torch

from napari_medseg.training.losses import segmentation_loss


def supervised_step(model, optimizer, scheduler, image, target, device: torch.device, amp) -> float:
    """One step of CE + soft Dice on (B, C, *S) images and (B, *S) labels; deep-supervision
    outputs (a tuple) are weighted 1, 1/2, 1/4, ... Returns the loss."""
    image = image.to(device, non_blocking=True)
    target = target.to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        output = model(image)
    outputs = output if isinstance(output, (list, tuple)) else [output]
    loss = sum(segmentation_loss(o.float(), resize_target(target, o)) / (2**i) for i, o in enumerate(outputs))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    optimizer.step()
    scheduler.step()
    return float(loss.detach())


def resize_target(target: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """``target`` (B, *S) resized (nearest) to the spatial size of ``output`` (B, K, *T)."""
    spatial = output.shape[2:]
    if target.shape[1:] == spatial:
        return target
    return torch.nn.functional.interpolate(target[:, None].float(), size=spatial, mode="nearest")[:, 0].long()
