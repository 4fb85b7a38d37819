"""The network over a whole model-grid image: 2D slice batches or 3D sliding windows
(both cut by :mod:`~napari_medseg.inference.tiling`), softmax probabilities out."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..control import ProgressCallback, StopCheck
from ..io.limits import release_heap, release_pages
from .device import channels_last, nhwc
from .tiling import Blend, restrict_tiles, slice_tiles, traverse, window_tiles


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
    within: np.ndarray | None = None,
) -> np.ndarray:
    """Network probabilities (K, z, y, x) on the model grid (2D slices or 3D windows),
    written into ``out`` when given (a float32 array of that shape, e.g. a disk-backed
    ``numpy.memmap``: 2D models write it batch by batch, 3D windows copy their blend in).

    ``within``: (z, y, x) bool, e.g. the brain the model's locator found; the network runs
    only on the slices or windows that hold some of it, and every voxel there gets what it
    would get from the whole run; the rest is certain background (1 for class 0).

    The model runs in eval mode on ``device``, a 2D one in channels-last memory
    (:func:`~napari_medseg.inference.device.channels_last`); its training flag and layout
    are restored after, and the C heap's freed blocks are handed back
    (:func:`~napari_medseg.io.limits.release_heap`)."""
    was_training = model.training
    model.eval().to(device)
    try:
        with channels_last(model):
            return _predict(model, image, device, amp, batch_size, overlap, progress, should_stop, out, within)
    finally:
        model.train(was_training)
        release_heap()  # the activations: freed, but kept by the C heap until trimmed


def _predict(model, image, device, amp, batch_size, overlap, progress, should_stop, out, within) -> np.ndarray:
    config = model.config
    if config.spatial_dims == 2:
        return predict_slices(
            model, image, offsets=config.context_offsets, batch_size=batch_size or slice_batch(image.shape[1:]),
            device=device, amp=amp, progress=progress, should_stop=should_stop, out=out, within=within,
        )  # fmt: skip
    patch = tuple(config.patch_size) or image.shape
    blended = predict_windows(
        model, image, patch=patch, overlap=overlap, batch_size=batch_size or 2,
        device=device, amp=amp, progress=progress, should_stop=should_stop, within=within,
    )  # fmt: skip
    if out is None:
        return blended
    if out.shape != blended.shape or out.dtype != np.float32:
        raise ValueError(f"output array {out.shape} {out.dtype} must be {blended.shape} float32")
    out[...] = blended
    release_pages(out)
    return out


#: Pixels a default batch of 2D slices holds: 8 slices of 256 x 256 (a head at 1 mm), fewer
#: of larger slices (4 of a 358 x 358 CT slice), so the network's working memory stays near
#: twice a 600 x 512 x 512 input's size instead of growing with the slice.
SLICE_BATCH_PIXELS = 8 * 256 * 256


def slice_batch(slice_shape: tuple[int, ...]) -> int:
    """Slices per forward pass by default: :data:`SLICE_BATCH_PIXELS` of them, 1 to 8."""
    return int(max(1, min(8, SLICE_BATCH_PIXELS // max(1, int(np.prod(slice_shape))))))


#: Probabilities at or below this are set to 0: 2^-24 is float32's resolution at 1 (half its
#: epsilon), so no sum with a class's probability sees them and no arg-max changes (the
#: largest of K is at least 1/K). What the softmax leaves there is noise in the low bits:
#: a 33-class map of a 1 mm brain, 93% of whose values lie below 1e-6, took 2.7 times the
#: disk and twice the time to compress with it.
PROBABILITY_FLOOR = 2.0**-24


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Logits (B, K, *S) -> float32 softmax probabilities over K, (B, K, *S) (stored
    classes-last), values at or below :data:`PROBABILITY_FLOOR` set to 0.

    The softmax runs along a contiguous last axis, one voxel's K logits at a time, so each
    value comes out the same whatever the number of threads: over a strided class axis
    torch splits the work by thread and the vectorised and scalar paths met different
    voxels, which changed the 1 and 2-thread results of one small scan by 3e-8 (and so the
    bytes a cohort worker writes against ``medseg segment``'s).
    """
    last = logits.movedim(1, -1)
    probabilities = torch.softmax(last if last.is_contiguous() else last.contiguous(), dim=-1, dtype=torch.float32)
    torch.nn.functional.threshold_(probabilities, PROBABILITY_FLOOR, 0.0)
    return probabilities.movedim(-1, 1)


def _softmax_batch(model: torch.nn.Module, device: torch.device, amp: torch.dtype | None):
    """Per-batch function for :func:`~napari_medseg.inference.tiling.traverse`: the model's
    :func:`class_probabilities`, a (B, K, *S) tensor on ``device``."""

    def run(inputs: torch.Tensor, regions) -> torch.Tensor:
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(nhwc(inputs.to(device)))
        return class_probabilities(logits)

    return run


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
    within: np.ndarray | None = None,
) -> np.ndarray:
    """Softmax probabilities of a 2D model applied slice by slice along axis 0 (only the
    slices holding some of ``within`` when given; the others are certain background).

    Args:
        model: maps (B, len(offsets), H, W) to logits (B, K, H, W).
        image: (Z, H, W) float32, already normalised.
        offsets: slice offsets stacked as channels (e.g. (-4, -2, 0, 2, 4)).
        batch_size: slices per forward pass.
        out: optional zero-filled (K, Z, H, W) float32 array to write into, e.g. a
            disk-backed ``numpy.memmap`` on a new file (its pages are written out and
            released after each batch); slices left out stay zero but for class 0.

    Returns:
        (K, Z, H, W) float32 probabilities (``out`` when given).
    """
    volume = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    tiles = restrict_tiles(slice_tiles(volume.shape[0], batch_size, offsets), within)
    blend = Blend(volume.shape, None, out if out is not None or tiles.batches else _empty(model, volume.shape))
    batches = traverse(volume, tiles, _softmax_batch(model, device, amp), progress=progress, should_stop=should_stop)
    # Each batch is stored by a second thread while the network computes the next: writing
    # 33 classes into a disk-backed array waits on page faults and the disk, not on the CPU.
    # At most two batches are held.
    with ThreadPoolExecutor(1, "store") as storer:
        stored = None
        for (slab,), probabilities in batches:
            classes = probabilities.shape[1]
            if out is not None and (out.shape != (classes, *volume.shape) or out.dtype != np.float32):
                raise ValueError(f"output array {out.shape} {out.dtype} must be {(classes, *volume.shape)} float32")
            if stored is not None:
                stored.result()
            stored = storer.submit(_store, blend, slab, probabilities)
        if stored is not None:
            stored.result()
    return blend.result(untouched_background=within is not None)


def _store(blend: Blend, slab: slice, probabilities: torch.Tensor) -> None:
    """One batch's (B, K, H, W) probabilities into ``blend`` as (K, B, H, W), class-major."""
    blend.add(slab, probabilities.transpose(0, 1).contiguous().cpu().numpy())
    release_pages(blend.out)


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
    within: np.ndarray | None = None,
) -> np.ndarray:
    """Softmax probabilities of a 3D model over (Z, Y, X) by overlapping windows (only the
    windows holding some of ``within`` when given; voxels none reaches are certain background).

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
        padded_within = None if within is None else np.pad(within, list(zip(before, after)))
        out = predict_windows(
            model, padded, patch=patch, overlap=overlap, batch_size=batch_size, device=device, amp=amp,
            progress=progress, should_stop=should_stop, within=padded_within,
        )  # fmt: skip
        return np.ascontiguousarray(out[(slice(None), *(slice(b, b + n) for b, n in zip(before, image.shape)))])
    volume = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    tiles = restrict_tiles(window_tiles(volume.shape, patch, overlap, batch_size), within)
    blend = Blend(volume.shape, tiles.weight, None if tiles.batches else _empty(model, volume.shape))
    batches = traverse(volume, tiles, _softmax_batch(model, device, amp), progress=progress, should_stop=should_stop)
    for regions, probabilities in batches:
        for region, window in zip(regions, probabilities.contiguous().cpu().numpy()):
            blend.add(region, window)
    return blend.result(untouched_background=within is not None)


def _empty(model: torch.nn.Module, shape: tuple[int, ...]) -> np.ndarray:
    """(K, *shape) float32 zeros for a run whose every tile was left out (K: the model's classes)."""
    return np.zeros((int(model.config.num_classes), *shape), np.float32)
