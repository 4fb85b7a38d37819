"""The network over a whole model-grid image: 2D slice batches or 3D sliding windows."""

from __future__ import annotations

import numpy as np
import torch

from ..io.limits import release_pages
from ..control import ProgressCallback, StopCheck
from .slices import predict_slices
from .windows import predict_windows


def predict_probabilities(
    model: torch.nn.Module,
    image: np.ndarray,
    *,
    device: torch.device,
    amp: torch.dtype | None,
    batch_size: int | None = None,
    overlap: float = 0.5,
    progress: ProgressCallback = None,
    should_stop: StopCheck = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Network probabilities (K, z, y, x) on the model grid (2D slices or 3D windows),
    written into ``out`` when given (a float32 array of that shape, e.g. a disk-backed
    ``numpy.memmap``: 2D models write it batch by batch, 3D windows copy their blend in).

    The model runs in eval mode on ``device``; its training flag is restored after."""
    was_training = model.training
    model.eval().to(device)
    try:
        return _predict(model, image, device, amp, batch_size, overlap, progress, should_stop, out)
    finally:
        model.train(was_training)


def _predict(model, image, device, amp, batch_size, overlap, progress, should_stop, out) -> np.ndarray:
    config = model.config
    if config.spatial_dims == 2:
        return predict_slices(
            model, image, offsets=config.context_offsets, batch_size=batch_size or 8,
            device=device, amp=amp, progress=progress, should_stop=should_stop, out=out,
        )  # fmt: skip
    patch = tuple(config.patch_size) or image.shape
    blended = predict_windows(
        model, image, patch=patch, overlap=overlap, batch_size=batch_size or 2,
        device=device, amp=amp, progress=progress, should_stop=should_stop,
    )  # fmt: skip
    if out is None:
        return blended
    if out.shape != blended.shape or out.dtype != np.float32:
        raise ValueError(f"output array {out.shape} {out.dtype} must be {blended.shape} float32")
    out[...] = blended
    release_pages(out)
    return out
