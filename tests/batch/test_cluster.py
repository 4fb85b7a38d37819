"""Sizing a local cluster, and the SLURM/PBS job a worker runs in (built, never submitted)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from napari_medseg.batch.cluster import ClusterOptions, jobqueue_cluster, local_sizes

GIB = 1 << 30


@pytest.mark.parametrize(
    ("workers", "threads", "cores", "memory", "gpus", "expected"),
    [
        (None, None, 2, 24 * GIB, 0, (2, 1)),  # one worker per core
        (None, None, 16, 24 * GIB, 0, (6, 2)),  # memory caps the workers (4 GiB each)
        (None, 4, 16, 64 * GIB, 0, (4, 4)),
        (None, None, 16, 64 * GIB, 2, (2, 8)),  # one worker per GPU
        (1, None, 2, 24 * GIB, 0, (1, 2)),  # one worker gets every core
    ],
)
def test_local_sizes(workers, threads, cores, memory, gpus, expected):
    assert local_sizes(workers, threads, cores=cores, memory_bytes=memory, gpus=gpus) == expected


def test_local_sizes_refuse_zero():
    with pytest.raises(ValueError, match="workers 0 must be at least 1"):
        local_sizes(0, None, cores=2, memory_bytes=GIB)


@pytest.mark.parametrize("kind", ["slurm", "pbs"])
def test_job_script_asks_for_cores_memory_gpus_and_sets_threads(kind):
    pytest.importorskip("dask_jobqueue")
    options = ClusterOptions(scheduler=kind, workers=3, threads_per_worker=8, gpus_per_worker=1, queue="gpu",
                             walltime="04:00:00", memory="32GB", account="study", dashboard_address=":0")  # fmt: skip
    cluster = jobqueue_cluster(options)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "export OMP_NUM_THREADS=8" in script and "04:00:00" in script and "study" in script
    if kind == "slurm":
        assert "#SBATCH --gres=gpu:1" in script and "#SBATCH -p gpu" in script and "--cpus-per-task=8" in script
    else:
        assert "ngpus=1" in script and "ncpus=8" in script and "#PBS -q gpu" in script


def test_local_workers_start_with_torch_threads_and_glibc_malloc_defaults(monkeypatch):
    """Dask's MALLOC_TRIM_THRESHOLD_ would turn off glibc's adaptive mmap threshold (a page fault
    storm in every forward pass); the torch threads are set before the worker process starts."""
    import os

    from napari_medseg.batch.cluster import open_client

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)  # as in a fresh shell
    with open_client(ClusterOptions(workers=1, threads_per_worker=1, dashboard_address=":0")) as client:
        seen = client.run(lambda: (os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("OMP_NUM_THREADS")))
    assert list(seen.values()) == [(None, "1")]


def test_two_local_clusters_in_one_fresh_process():
    """A cohort's own cluster raises Dask's allowed failures for its run; a second run in the
    same process (nothing imported distributed before) still finds Dask's defaults."""
    code = textwrap.dedent(
        """
        import dask
        from napari_medseg.batch.cluster import ClusterOptions
        from napari_medseg.batch.run import _client

        options = ClusterOptions(workers=1, threads_per_worker=1, dashboard_address=":0")
        seen = []
        for _ in range(2):
            with _client(None, options, retries=5):
                seen.append(dask.config.get("distributed.scheduler.allowed-failures"))
        print(seen, dask.config.get("distributed.scheduler.allowed-failures"))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[8, 8] 3"
