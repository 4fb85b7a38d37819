"""A worker process killed mid-cohort: Dask reruns its case elsewhere; nothing lost or duplicated."""

from __future__ import annotations

import os
import signal

from napari_medseg.batch import run_cohort
from napari_medseg.batch.manifest import MANIFEST_NAME, THUMBNAIL_NAME
from tests.batch.conftest import write_scans


def test_killed_worker_loses_no_case(bundle, client, tmp_path):
    scans = write_scans(tmp_path / "scans", [(10, 40, 40)] * 6)
    out = tmp_path / "out"
    killed: list[int] = []

    def kill_a_busy_worker(progress) -> None:
        if progress.done != 1 or killed:
            return
        pids = client.run(os.getpid)
        busy = [address for address, keys in client.processing().items() if keys] or list(pids)
        killed.append(pids[busy[0]])
        os.kill(killed[0], signal.SIGKILL)

    table = run_cohort(scans, out, client, model=str(bundle), retries=0, progress=kill_a_busy_worker)

    assert killed and killed[0] not in client.run(os.getpid).values()  # the nanny started a new process
    assert sorted(table.case_id) == [f"case{i}" for i in range(6)] and (table.status == "done").all()
    assert table.attrs["run"]["ran"] == 6
    for i in range(6):
        names = {p.name for p in (out / f"case{i}").iterdir()}
        assert names == {f"case{i}_seg.nii.gz", f"case{i}_prob.nii.gz", f"case{i}_report.json", MANIFEST_NAME,
                         THUMBNAIL_NAME}, names  # fmt: skip
    # each process loads once, and only when it gets a case: the new one may have found none left;
    # the table counts the workers alive at its end, and the nanny's restart may still be under way
    assert table.attrs["run"]["workers"] in (1, 2) and table.attrs["run"]["model_loads"] <= 2
