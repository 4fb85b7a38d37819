"""One traversal of a model-grid image, shared by everything that runs a network over it.

A (z, y, x) image is cut into tiles: for 2D models, slabs of ``batch_size`` slices along z,
each slice given its neighbours at ``offsets`` as input channels (zeros outside the
image); for 3D models, windows of ``patch`` overlapping by ``overlap``, ``batch_size`` per
batch, whose outputs are blended with Gaussian weights (sigma = patch / 8, as nnU-Net and
MONAI's sliding-window inference do). :func:`traverse` builds each batch's input, hands
it to the caller's per-batch function (prediction, Monte Carlo samples, Grad-CAM),
checks for a stop request before every batch and reports progress after it;
:class:`Blend` puts the per-tile outputs back together.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from ..control import ProgressCallback, StopCheck, check_stop, report
from ..io.limits import release_pages

__all__ = ["Blend", "Tiles", "context_stack", "gaussian_importance", "restrict_tiles", "slice_tiles", "traverse",
           "window_starts", "window_tiles"]  # fmt: skip

Region = tuple[slice, ...]
Output = TypeVar("Output")


def context_stack(volume: torch.Tensor, indices: torch.Tensor, offsets: tuple[int, ...]) -> torch.Tensor:
    """(B, C, H, W) inputs: for each slice index, the slices at ``offsets`` (zero outside)."""
    depth = volume.shape[0]
    positions = indices[:, None] + torch.tensor(offsets)[None, :]
    valid = (positions >= 0) & (positions < depth)
    stack = volume[positions.clamp(0, depth - 1)]
    return stack * valid[:, :, None, None].to(stack.dtype)


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


@dataclass(frozen=True)
class Tiles:
    """How a (z, y, x) image is cut.

    Attributes:
        batches: the regions of each batch: one slab ``(slice(z0, z1),)`` per batch of 2D
            slices, or one ``(z, y, x)`` window region per 3D window.
        offsets: 2D: the slice offsets stacked as channels; None for 3D windows.
        weight: 3D: the Gaussian blending weight of a window (its shape); None for 2D slabs,
            which are written exactly once.
        units: slices (2D) or windows (3D) in all, what progress counts.
    """

    batches: tuple[tuple[Region, ...], ...]
    offsets: tuple[int, ...] | None
    weight: np.ndarray | None
    units: int

    def inputs(self, volume: torch.Tensor, regions: Sequence[Region]) -> torch.Tensor:
        """The network input of one batch: (B, len(offsets), H, W) or (B, 1, *patch)."""
        if self.offsets is not None:
            (slab,) = regions
            return context_stack(volume, torch.arange(slab[0].start, slab[0].stop), self.offsets)
        return torch.stack([volume[region] for region in regions])[:, None]

    def count(self, regions: Sequence[Region]) -> int:
        return regions[0][0].stop - regions[0][0].start if self.offsets is not None else len(regions)


def slice_tiles(depth: int, batch_size: int, offsets: Sequence[int]) -> Tiles:
    """Slabs of ``batch_size`` slices along z of an image ``depth`` slices deep."""
    _positive("batch_size", batch_size)
    slabs = tuple(((slice(start, min(start + batch_size, depth)),),) for start in range(0, depth, batch_size))
    return Tiles(slabs, tuple(int(o) for o in offsets), None, depth)


def window_tiles(shape: Sequence[int], patch: Sequence[int], overlap: float, batch_size: int) -> Tiles:
    """Windows of ``patch`` (at most ``shape``) covering ``shape`` with ``overlap``."""
    _positive("batch_size", batch_size)
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap {overlap} must be in [0, 1)")
    patch = tuple(int(p) for p in patch)
    starts = list(itertools.product(*[window_starts(s, p, overlap) for s, p in zip(shape, patch)]))
    regions = [tuple(slice(s, s + p) for s, p in zip(start, patch)) for start in starts]
    batches = tuple(tuple(regions[i : i + batch_size]) for i in range(0, len(regions), batch_size))
    return Tiles(batches, None, gaussian_importance(patch), len(regions))


def restrict_tiles(tiles: Tiles, within: np.ndarray | None) -> Tiles:
    """``tiles`` without the tiles (2D slabs, 3D windows) that hold no voxel of ``within``
    ((z, y, x) bool); ``tiles`` itself when ``within`` is None.

    The kept batches are the full run's batches, whole, so every voxel of ``within`` gets
    exactly what the full run gives it (batch composition can change a network's float
    rounding); voxels of no kept tile are left for :meth:`Blend.result` to fill.
    """
    if within is None:
        return tiles
    if tiles.offsets is not None:
        touched = np.asarray(within).reshape(within.shape[0], -1).any(axis=1)
        kept = tuple(batch for batch in tiles.batches if touched[batch[0][0]].any())
    else:  # a batch of windows is kept whole when one of them is needed
        kept = tuple(batch for batch in tiles.batches if any(within[region].any() for region in batch))
    return Tiles(kept, tiles.offsets, tiles.weight, sum(tiles.count(batch) for batch in kept))


def traverse(
    volume: torch.Tensor,
    tiles: Tiles,
    run_batch: Callable[[torch.Tensor, tuple[Region, ...]], Output],
    *,
    progress: ProgressCallback = None,
    should_stop: StopCheck = None,
) -> Iterator[tuple[tuple[Region, ...], Output]]:
    """``(regions, run_batch(inputs, regions))`` batch by batch over ``volume`` (z, y, x).

    Raises:
        Cancelled: ``should_stop()`` returned True before a batch.
    """
    done = 0
    for regions in tiles.batches:
        check_stop(should_stop)
        output = run_batch(tiles.inputs(volume, regions), regions)
        yield regions, output
        done += tiles.count(regions)
        report(progress, done, tiles.units)


class Blend:
    """Per-tile outputs put back together into a ``(*lead, z, y, x)`` float32 array.

    2D slabs (``weight`` None) are written once, in place (``out``, zero-filled, may be a
    disk-backed memmap); 3D windows are accumulated with their Gaussian weights and
    normalised by :meth:`result`. Voxels no tile reached are still zero in every class
    when :meth:`result` makes them background: it writes their first class only (on a whole
    head, 33 classes of the slices without brain are about 1 GB).
    """

    def __init__(self, shape: Sequence[int], weight: np.ndarray | None, out: np.ndarray | None = None) -> None:
        self.shape, self.weight, self.out = tuple(shape), weight, out
        self.norm = None if weight is None else np.zeros(self.shape, dtype=np.float32)
        self.slices_written = np.zeros(self.shape[0], bool)

    def add(self, region: Region, values: np.ndarray) -> None:
        """``values`` (*lead, *region) of one tile."""
        if self.out is None:
            self.out = np.zeros((*values.shape[: values.ndim - len(self.shape)], *self.shape), dtype=np.float32)
        lead = (slice(None),) * (self.out.ndim - len(self.shape))
        if self.weight is None:
            self.out[(*lead, *region)] = values
            self.slices_written[region[0]] = True
            return
        self.out[(*lead, *region)] += values * self.weight
        self.norm[region] += self.weight

    def result(self, untouched_background: bool = False) -> np.ndarray:
        """The blended (*lead, z, y, x) array. With ``untouched_background`` the voxels no
        tile reached (tiles left out by :func:`restrict_tiles`) are certain background: 1 in
        the first lead channel, 0 in the others; otherwise every voxel must have been reached."""
        if self.out is None:
            raise ValueError("nothing was blended")
        if self.norm is not None:
            untouched = self.norm == 0
            if untouched.any():
                if not untouched_background:
                    raise ValueError(f"{int(untouched.sum())} voxels were reached by no window")
                self.norm[untouched] = 1.0
            self.out /= self.norm
            if untouched.any():
                self.out[0][untouched] = 1.0
            return self.out
        for i, z in enumerate(np.flatnonzero(~self.slices_written)):
            if not untouched_background:
                raise ValueError(f"slice {z} was never written")
            self.out[0, z] = 1.0
            if i % 16 == 15:  # a disk-backed array's written pages leave memory as the network's do
                release_pages(self.out)
        release_pages(self.out)
        return self.out


def _positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} {value!r} must be a positive int")
