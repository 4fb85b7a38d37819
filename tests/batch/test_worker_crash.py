"""A case that takes its worker process down (a crash, the out-of-memory killer) fails after
its tries with the workers it killed named, and the rest of the cohort goes on."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from napari_medseg.batch import run_cohort
from napari_medseg.batch.attempts import ATTEMPTS_FOLDER
from tests.batch.conftest import write_scans

PRELOAD = Path(__file__).with_name("crashing_case.py")


@pytest.fixture(scope="module")
def crashing_client():
    """Two worker processes whose ``run_case`` ends the process for cases named ``crash_*``;
    the scheduler allows more deaths per task than any case here is tried."""
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 10}):
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                          preload=[str(PRELOAD)]) as cluster, Client(cluster) as client:  # fmt: skip
            yield client


@pytest.mark.parametrize("crash", ["crash_exit", "crash_segv"])
def test_a_case_that_kills_its_worker_fails_after_its_tries(crash, bundle, crashing_client, tmp_path):
    scans = write_scans(tmp_path / "scans", [(6, 20, 18)] * 3)
    shutil.move(scans[0], scans[0].with_name(f"{crash}0.nii.gz"))
    out = tmp_path / "out"
    table = run_cohort(tmp_path / "scans", out, crashing_client, model=str(bundle), retries=1)

    rows = table.set_index("case_id")
    assert sorted(rows.index) == sorted([f"{crash}0", "case1", "case2"])
    assert (rows.loc[["case1", "case2"], "status"] == "done").all()
    failed = rows.loc[f"{crash}0"]
    assert failed.status == "failed" and failed.error.startswith("WorkerDied")
    assert "was tried 2 times and its worker process died during 2 of them" in failed.error
    assert failed.error.count("pid ") == 2
    assert not (out / ATTEMPTS_FOLDER).exists()  # the start records go with the run
    assert table.attrs["run"]["failed"] == 1 and table.attrs["run"]["ran"] == 2
