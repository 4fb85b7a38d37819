"""Sliding-window prediction of 3D models with Gaussian blending."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from ..control import ProgressCallback, StopCheck, check_stop, report


def gaussian_importance(patch: tuple[int, ...], sigma_scale: float = 0.125) -> np.ndarray:
    """Weights peaking at the patch centre (sigma = patch/8), minimum clamped above 0."""
    grids = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in patch], indexing="ij")
    sigmas = [max(n * sigma_scale, 1e-3) for n in patch]
    weight = np.exp(-sum(g**2 / (2 * s**2) for g, s in zip(grids, sigmas)))
    weight /= weight.max()
    return np.maximum(weight, 1e-3).astype(np.float32)


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start indices covering ``size`` with windows of ``patch`` overlapping by ``overlap``."""
    if patch >= size:
        return [0]
    step = max(1, int(round(patch * (1 - overlap))))
    starts = list(range(0, size - patch + 1, step))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


@torch.inference_mode()
def predict_windows(
    model: torch.nn.Module,
    image: np.ndarray,
    *,
    patch: tuple[int, int, int],
    overlap: float = 0.5,
    batch_size: int = 2,
    device: torch.device = torch.device("cpu"),
    amp: torch.dtype | None = None,
    progress: ProgressCallback = None,
    should_stop: StopCheck = None,
) -> np.ndarray:
    """Softmax probabilities of a 3D model over (Z, Y, X) by overlapping windows.

    A volume smaller than ``patch`` along an axis is padded with zeros (air after the
    normalisation) to the patch, centred, and the result cropped back: a network trained
    on whole fields of view sees one again (nnU-Net and MONAI pad the same way).
    Per-window probabilities are blended with Gaussian weights.

    Returns:
        (K, Z, Y, X) float32.
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap {overlap} must be in [0, 1)")
    before = [max(0, p - n) // 2 for p, n in zip(patch, image.shape)]
    after = [max(0, p - n) - b for p, n, b in zip(patch, image.shape, before)]
    if any(before) or any(after):
        padded = np.pad(image, list(zip(before, after)))
        out = predict_windows(
            model, padded, patch=patch, overlap=overlap, batch_size=batch_size, device=device, amp=amp,
            progress=progress, should_stop=should_stop,
        )  # fmt: skip
        return np.ascontiguousarray(out[(slice(None), *(slice(b, b + n) for b, n in zip(before, image.shape)))])
    shape = image.shape
    patch = tuple(patch)
    weight = gaussian_importance(patch)
    starts = list(itertools.product(*[window_starts(s, p, overlap) for s, p in zip(shape, patch)]))
    volume = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    accumulated: np.ndarray | None = None
    weights = np.zeros(shape, dtype=np.float32)
    for first in range(0, len(starts), batch_size):
        check_stop(should_stop)
        chunk = starts[first : first + batch_size]
        slices = [tuple(slice(s, s + p) for s, p in zip(start, patch)) for start in chunk]
        batch = torch.stack([volume[s] for s in slices])[:, None].to(device)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(batch)
        probabilities = torch.softmax(logits.float(), dim=1).cpu().numpy()
        if accumulated is None:
            accumulated = np.zeros((probabilities.shape[1], *shape), dtype=np.float32)
        for window, region in zip(probabilities, slices):
            accumulated[(slice(None), *region)] += window * weight
            weights[region] += weight
        report(progress, min(first + batch_size, len(starts)), len(starts))
    assert accumulated is not None
    accumulated /= weights[None]
    return accumulated
