"""Where a cohort runs: a local Dask cluster, a running scheduler, or SLURM/PBS jobs.

Every worker is a process with one Dask thread (one case at a time, one model) whose torch
uses ``threads_per_worker`` threads (set through ``OMP_NUM_THREADS`` before the process
starts, as Dask does for its own workers, never by changing torch's settings in-process).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

__all__ = ["ClusterOptions", "jobqueue_cluster", "local_sizes", "open_client"]

logger = logging.getLogger(__name__)

GIB = 1 << 30
MEMORY_PER_WORKER = 4 * GIB  # a default bundle, one volume and its probability maps, with room


@dataclass(frozen=True)
class ClusterOptions:
    """How to size and place workers.

    Attributes:
        scheduler: "local", "slurm", "pbs", or a scheduler address ("tcp://host:8786").
        workers: worker processes (default: sized to the machine, or one per GPU).
        threads_per_worker: torch threads per worker (default: cores / workers).
        gpus_per_worker: GPUs a SLURM/PBS worker asks for (local workers share the GPUs found).
        queue, walltime, memory, account: the job's partition/queue, time limit ("01:00:00"),
            memory ("16GB") and account (SLURM/PBS only).
        job_extra: further scheduler directives, e.g. ["--constraint=a100"].
        dashboard_address: where a local cluster serves its dashboard (":8787"; ":0" any port).
    """

    scheduler: str = "local"
    workers: int | None = None
    threads_per_worker: int | None = None
    gpus_per_worker: int = 0
    queue: str | None = None
    walltime: str = "01:00:00"
    memory: str | None = None
    account: str | None = None
    job_extra: tuple[str, ...] = field(default_factory=tuple)
    dashboard_address: str = ":8787"


def local_sizes(workers: int | None, threads: int | None, *, cores: int, memory_bytes: int, gpus: int = 0) -> tuple[int, int]:
    """(workers, torch threads per worker) with workers x threads <= cores.

    Defaults: one worker per GPU when there are GPUs; otherwise as many workers as the
    cores allow (``threads`` each, 1 by default) and the memory holds (4 GiB each).

    Raises:
        ValueError: a count below 1 (named).
    """
    for name, value in (("workers", workers), ("threads per worker", threads)):
        if value is not None and value < 1:
            raise ValueError(f"{name} {value} must be at least 1")
    if workers is None:
        if gpus:
            workers = gpus
        else:
            by_cores = cores // (threads or 1)
            workers = max(1, min(by_cores, memory_bytes // MEMORY_PER_WORKER))
    if threads is None:
        threads = max(1, cores // workers)
    if workers * threads > cores:
        logger.warning("%d workers x %d threads exceed the %d cores: cases will compete for them", workers, threads, cores)
    return workers, threads


@contextmanager
def open_client(options: ClusterOptions) -> Iterator:
    """A Dask ``Client`` for ``options.scheduler``; a cluster started here is closed on exit
    (also on Ctrl-C); a scheduler given by address is left running."""
    from distributed import Client

    if options.scheduler == "local":
        cluster = _local_cluster(options)
    elif options.scheduler in ("slurm", "pbs"):
        cluster = jobqueue_cluster(options)
        cluster.scale(options.workers or 1)  # submits the jobs
        logger.info("submitted %d %s jobs like this one:\n%s", options.workers or 1, options.scheduler, cluster.job_script())
    else:
        with Client(options.scheduler) as client:
            yield client
        return
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def _local_cluster(options: ClusterOptions):
    import dask
    from distributed import LocalCluster

    from ..io.limits import available_memory_bytes

    workers, threads = local_sizes(options.workers, options.threads_per_worker, cores=os.cpu_count() or 1,
                                   memory_bytes=available_memory_bytes(), gpus=_local_gpus())  # fmt: skip
    logger.info("local cluster: %d worker processes x %d threads", workers, threads)
    environ = _thread_env(threads)
    # set before each worker process starts (also one replacing a killed worker): torch reads it once.
    # Dask's MALLOC_TRIM_THRESHOLD_ is left out (None unsets it): it turns off glibc's adaptive mmap
    # threshold, so every tensor of 128 kB or more is mapped afresh and faulted in: measured on the
    # default U-Net, 6.5x the page faults and 4x the system time of a forward pass.
    spawn = {**dask.config.get("distributed.nanny.pre-spawn-environ"), **environ, "MALLOC_TRIM_THRESHOLD_": None}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": spawn}):
        return LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, env=environ,
            dashboard_address=options.dashboard_address,
        )  # fmt: skip


def jobqueue_cluster(options: ClusterOptions):
    """A SLURM or PBS cluster (no job submitted yet) of one job per worker:
    ``threads_per_worker`` cores (4 by default), the memory and GPUs asked for.

    Such a worker has as many Dask threads as cores; the worker's model lock still lets one
    case at a time run there, with all the cores."""
    try:
        import dask_jobqueue
    except ImportError:
        raise ValueError(
            f"scheduler {options.scheduler!r} needs dask-jobqueue: pip install 'napari-medseg[cohort]'"
        ) from None
    threads = options.threads_per_worker or 4
    memory = options.memory or f"{max(4, 4 * threads)}GB"
    extra = list(options.job_extra)
    common = dict(
        cores=threads, processes=1, memory=memory, walltime=options.walltime, queue=options.queue,
        account=options.account, job_script_prologue=[f"export {k}={v}" for k, v in _thread_env(threads).items()],
        scheduler_options={"dashboard_address": options.dashboard_address},
    )  # fmt: skip
    if options.scheduler == "slurm":
        if options.gpus_per_worker:
            extra.append(f"--gres=gpu:{options.gpus_per_worker}")
        cluster = dask_jobqueue.SLURMCluster(job_extra_directives=extra, **common)
    else:
        spec = f"select=1:ncpus={threads}:mem={memory}" + (f":ngpus={options.gpus_per_worker}" if options.gpus_per_worker else "")
        cluster = dask_jobqueue.PBSCluster(job_extra_directives=extra, resource_spec=spec, **common)
    return cluster


def _thread_env(threads: int) -> dict[str, str]:
    return {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def _local_gpus() -> int:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0
