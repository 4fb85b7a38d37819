"""Slice-batched prediction of 2D (2.5D) models over a volume."""

from __future__ import annotations

import numpy as np
import torch

from ..control import ProgressCallback, StopCheck, check_stop, report


def context_stack(volume: torch.Tensor, indices: torch.Tensor, offsets: tuple[int, ...]) -> torch.Tensor:
    """(B, C, H, W) inputs: for each slice index, the slices at ``offsets`` (zero outside)."""
    depth = volume.shape[0]
    positions = indices[:, None] + torch.tensor(offsets)[None, :]
    valid = (positions >= 0) & (positions < depth)
    stack = volume[positions.clamp(0, depth - 1)]
    return stack * valid[:, :, None, None].to(stack.dtype)


@torch.inference_mode()
def predict_slices(
    model: torch.nn.Module,
    image: np.ndarray,
    *,
    offsets: tuple[int, ...] = (0,),
    batch_size: int = 8,
    device: torch.device = torch.device("cpu"),
    amp: torch.dtype | None = None,
    progress: ProgressCallback = None,
    should_stop: StopCheck = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Softmax probabilities of a 2D model applied slice by slice along axis 0.

    Args:
        model: maps (B, len(offsets), H, W) to logits (B, K, H, W).
        image: (Z, H, W) float32, already normalised.
        offsets: slice offsets stacked as channels (e.g. (-4, -2, 0, 2, 4)).
        batch_size: slices per forward pass.
        out: optional (K, Z, H, W) float32 array to write into, e.g. a disk-backed
            ``numpy.memmap`` (its pages are written out and released after each batch).

    Returns:
        (K, Z, H, W) float32 probabilities (``out`` when given).
    """
    from ..io.limits import release_pages

    volume = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    depth = volume.shape[0]
    output: np.ndarray | None = out
    for start in range(0, depth, batch_size):
        check_stop(should_stop)
        indices = torch.arange(start, min(start + batch_size, depth))
        batch = context_stack(volume, indices, offsets).to(device)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(batch)
        probabilities = torch.softmax(logits.float(), dim=1).cpu().numpy()
        expected = (probabilities.shape[1], depth, *probabilities.shape[2:])
        if output is None:
            output = np.empty(expected, dtype=np.float32)
        elif output.shape != expected or output.dtype != np.float32:
            raise ValueError(f"output array {output.shape} {output.dtype} must be {expected} float32")
        output[:, start : start + len(indices)] = probabilities.transpose(1, 0, 2, 3)
        release_pages(output)
        report(progress, min(start + batch_size, depth), depth)
    assert output is not None
    return output
