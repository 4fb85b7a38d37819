"""Data-parallel fine-tuning under ``torchrun`` (DistributedDataParallel).

Multi-GPU and multi-node
------------------------
``medseg finetune`` is one entry point for one process or many. Started by ``torchrun``, it
finds ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in the environment, joins a process
group (NCCL when CUDA is available and ``--device`` is not ``cpu``; gloo otherwise), puts
process ``LOCAL_RANK`` on GPU ``LOCAL_RANK``, wraps the model in DistributedDataParallel
and gives each process its own sampling seed, so every step trains on
``nproc x --batch`` different windows with gradients averaged across processes. Losses and
metrics are averaged over the processes; only rank 0 prints the progress and the summary
and writes the new bundle. On one machine with 4 GPUs::

    torchrun --standalone --nproc_per_node 4 -m napari_medseg.cli.main finetune \
        --image scan.nii.gz --labels strokes.nii.gz --model brain-tissue-unet -o tuned

On two machines with 8 GPUs each, run on both (``--node_rank 0`` on the machine whose
address is given, ``--node_rank 1`` on the other), with the same port open between them::

    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 \
        --master_addr 10.0.0.1 --master_port 29500 \
        -m napari_medseg.cli.main finetune --image ... --labels ... --model ... -o tuned

Every process reads the images itself, so they must be at the same path on every machine
(a shared file system); the new bundle is written by rank 0 only, on its machine. On a CPU
machine, ``--nproc_per_node 2 ... --device cpu`` runs two gloo processes (set
``OMP_NUM_THREADS`` so that processes x threads does not exceed the cores). A stop request
(Ctrl-C once) is agreed across processes at the end of a step, so all stop together and
rank 0 still writes a valid bundle. ``--steps`` counts optimizer steps, each over
``nproc x --batch`` windows; consider scaling ``--lr`` with the number of processes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistContext",
    "all_reduce",
    "any_rank",
    "barrier",
    "current",
    "env_world_size",
    "init_from_env",
    "session",
    "shutdown",
    "wrap",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """This process's place in a process group.

    Attributes:
        rank: global rank; 0 writes outputs.
        local_rank: rank on this machine (the GPU index with NCCL).
        world_size: number of processes.
        backend: ``"nccl"`` or ``"gloo"``.
        device: where this process trains.
        owns_group: True when :func:`init_from_env` created the group (and so ends it).
    """

    rank: int
    local_rank: int
    world_size: int
    backend: str
    device: torch.device
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE {os.environ['WORLD_SIZE']!r} is not an integer") from None


def init_from_env(device: str | torch.device | None = "auto") -> DistContext | None:
    """Join the process group torchrun describes; None when not started by torchrun.

    ``device`` ``"auto"``/``"cuda"`` with CUDA available: NCCL, GPU ``LOCAL_RANK``;
    otherwise gloo on the CPU. An already initialised group is reused (not owned).
    """
    if env_world_size() <= 1 or not dist.is_available():
        return None
    if dist.is_initialized():
        return current(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and str(device) not in ("cpu", "mps")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    backend = "nccl" if use_cuda else "gloo"
    dist.init_process_group(backend=backend)
    context = _context(local_rank, backend, owns=True)
    logger.info("joined process group: rank %d of %d (%s)", context.rank, context.world_size, backend)
    return context


def current(device: str | torch.device | None = "auto") -> DistContext | None:
    """The context of an initialised process group of more than one process, else None."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return None
    backend = str(dist.get_backend())
    return _context(int(os.environ.get("LOCAL_RANK", "0")), backend, owns=False)


def _context(local_rank: int, backend: str, *, owns: bool) -> DistContext:
    target = torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")
    return DistContext(
        rank=dist.get_rank(),
        local_rank=local_rank,
        world_size=dist.get_world_size(),
        backend=backend,
        device=target,
        owns_group=owns,
    )


def wrap(model: nn.Module, context: DistContext | None) -> nn.Module:
    """``model`` in DistributedDataParallel (it must already be on ``context.device``)."""
    if context is None:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [context.local_rank] if context.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def all_reduce(tensor: torch.Tensor, context: DistContext | None, op: str = "sum") -> torch.Tensor:
    """Sum, mean or max of ``tensor`` over all processes (a new tensor on its device)."""
    if context is None:
        return tensor
    work = tensor.detach().to(context.device, copy=True)
    if op == "max":
        dist.all_reduce(work, op=dist.ReduceOp.MAX)
    else:
        dist.all_reduce(work, op=dist.ReduceOp.SUM)
        if op == "mean":
            work = work / context.world_size
    return work.to(tensor.device)


def any_rank(flag: bool, context: DistContext | None) -> bool:
    """True on every process when ``flag`` is True on any (for agreeing on a stop)."""
    if context is None:
        return bool(flag)
    return bool(all_reduce(torch.tensor([float(flag)]), context, op="max").item() > 0)


def barrier(context: DistContext | None) -> None:
    if context is None:
        return
    if context.backend == "nccl":
        dist.barrier(device_ids=[context.local_rank])
    else:
        dist.barrier()


def shutdown(context: DistContext | None) -> None:
    """Barrier, then destroy the group when this module created it."""
    if context is None or not context.owns_group or not dist.is_initialized():
        return
    try:
        barrier(context)
    finally:
        dist.destroy_process_group()


@contextmanager
def session(device: str | torch.device | None = "auto") -> Iterator[DistContext | None]:
    """``with session(device) as context:`` joins torchrun's group (None without torchrun)
    and leaves it on exit (barrier first on a normal exit)."""
    context = init_from_env(device)
    try:
        yield context
    except BaseException:
        if context is not None and context.owns_group and dist.is_initialized():
            dist.destroy_process_group()
        raise
    shutdown(context)
