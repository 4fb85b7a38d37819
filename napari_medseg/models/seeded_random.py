"""A private, seeded torch random state: what MC dropout draws its masks from."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["SeededRandom"]


class SeededRandom:
    """A torch random state started from ``seed`` and carried from one :meth:`active`
    block to the next: masks drawn inside are reproducible run to run, and the
    process-wide generators are left as found.

    CPU and CUDA generators are forked; on other devices (MPS) the masks come from that
    device's process-wide generator, so runs there are not reproducible.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._state: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def reset(self) -> None:
        """Start again from ``seed``."""
        self._state = None

    @contextmanager
    def active(self, device: torch.device | str) -> Iterator[None]:
        """Run the block under this state, for work on ``device``."""
        device = torch.device(device)
        cuda = device.type == "cuda"
        index = (device.index if device.index is not None else torch.cuda.current_device()) if cuda else None
        with torch.random.fork_rng(devices=[index] if cuda else [], device_type="cuda"):
            if self._state is None:
                torch.random.default_generator.manual_seed(self.seed)
                if cuda:
                    with torch.cuda.device(index):
                        torch.cuda.manual_seed(self.seed)
            else:
                torch.set_rng_state(self._state[0])
                if cuda and self._state[1] is not None:
                    torch.cuda.set_rng_state(self._state[1], index)
            try:
                yield
            finally:
                self._state = (torch.get_rng_state(), torch.cuda.get_rng_state(index) if cuda else None)
