"""Dropout masks drawn once per MC-dropout sample and reused, shifted, for every batch.

Drawing a fresh Bernoulli mask for every activation of every batch was 65% of the time of
10 samples of the shipped U-Net's finest decoder level (45 ms of random numbers per batch
and sample against 7 ms of convolutions). :class:`ReusedMasks` draws one pool per sample,
switched-on dropout module and activation shape, at the first batch of that shape; each
later batch takes the pool rolled by a random offset along every axis (batch, channel
and space), a few random integers and a copy. Every element of a rolled pool is still
Bernoulli(1 - p), independent of the other elements of the same batch; what two batches
share is the pool, at positions that differ by the random offsets, so no voxel is tied to
the voxel at the same place in another batch.
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["POOL_BYTES", "ReusedMasks"]

#: Bytes the pools of one run may hold (one byte per element): 10 samples of the finest
#: decoder level of a 2D batch take about 60 MB; beyond this (large 3D windows) masks are
#: drawn fresh for every batch, as without pools.
POOL_BYTES = 256 << 20


class ReusedMasks:
    """The mask pools of one sampling run (cleared by :meth:`clear` at the start of each).

    Use :meth:`installed` around the S passes of a batch, setting :attr:`sample` to the
    pass's index before it: the switched-on dropout modules then apply the pools of that
    sample instead of drawing new masks. Pools are drawn and rolled with torch's current
    random state (the sampler's own seeded one).
    """

    def __init__(self) -> None:
        self.sample = 0
        self._pools: dict[tuple[int, int, tuple[int, ...]], torch.Tensor] = {}
        self._bytes = 0

    def clear(self) -> None:
        self._pools.clear()
        self.sample, self._bytes = 0, 0

    @contextmanager
    def installed(self, modules: Sequence[nn.Module]) -> Iterator[None]:
        """``modules`` (dropout modules in training mode) apply this store's masks while inside."""
        for module in modules:
            module.forward = types.MethodType(self._forward_of(module), module)
        try:
            yield
        finally:
            for module in modules:
                del module.forward  # the class's own forward again

    def _forward_of(self, module: nn.Module):
        store = self
        channelwise = isinstance(module, (nn.Dropout2d, nn.Dropout3d))

        def forward(this: nn.Module, x: torch.Tensor) -> torch.Tensor:
            if not this.training or this.p == 0:
                return x
            shape = tuple(x.shape[:2]) + (1,) * (x.dim() - 2) if channelwise else tuple(x.shape)
            mask = store.mask(id(this), shape, this.p, x.device)
            return x * mask * (1.0 / (1.0 - this.p))

        return forward

    def mask(self, module_id: int, shape: tuple[int, ...], p: float, device: torch.device) -> torch.Tensor:
        """(shape) bool keep-mask of the current sample for one module: the pool itself the
        first time, then the pool rolled by a random offset along every axis (a fresh mask
        each time once the pools hold :data:`POOL_BYTES`)."""
        key = (module_id, self.sample, shape)
        pool = self._pools.get(key)
        if pool is None:
            pool = torch.rand(shape, device=device) >= p
            if self._bytes + pool.numel() <= POOL_BYTES:
                self._pools[key] = pool
                self._bytes += pool.numel()
            return pool
        shifts = [int(torch.randint(n, ())) if n > 1 else 0 for n in shape]
        return torch.roll(pool, shifts, dims=tuple(range(len(shape))))
