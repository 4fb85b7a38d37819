"""A worker process killed mid-cohort: its case runs again elsewhere; nothing lost or duplicated."""

from __future__ import annotations

import json
import os
import signal
import time

from napari_medseg.batch import run_cohort
from napari_medseg.batch.manifest import MANIFEST_NAME, THUMBNAIL_NAME
from tests.batch.conftest import write_scans


def test_killed_worker_loses_no_case(bundle, client, tmp_path):
    scans = write_scans(tmp_path / "scans", [(10, 40, 40)] * 6)
    out = tmp_path / "out"
    killed: list[int] = []
    finished: dict[str, int] = {}  # case -> its manifest's time when the worker was killed

    def kill_a_busy_worker(progress) -> None:
        if progress.done != 1 or killed:
            return
        # the worker that ran the finished case: a result it still held would be computed again
        manifests = list(out.glob(f"*/{MANIFEST_NAME}"))
        finished.update({m.parent.name: m.stat().st_mtime_ns for m in manifests})
        worker = json.loads(manifests[0].read_text())["row"]["worker"]
        killed.append(int(worker.rsplit(":", 1)[1]))
        os.kill(killed[0], signal.SIGKILL)

    # the killed worker's case counts that try: with one retry (the default) it runs again elsewhere
    table = run_cohort(scans, out, client, model=str(bundle), retries=1, progress=kill_a_busy_worker)

    assert killed and killed[0] not in client.run(os.getpid).values()  # the nanny started a new process
    assert sorted(table.case_id) == [f"case{i}" for i in range(6)] and (table.status == "done").all()
    assert table.attrs["run"]["ran"] == 6
    # a case finished before the kill is not computed again, even if its result lived on that worker
    # (nor after the run: a task the scheduler reruns keeps its worker busy)
    deadline = time.monotonic() + 30
    while any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3)
    assert finished and all((out / case / MANIFEST_NAME).stat().st_mtime_ns == t for case, t in finished.items())
    for i in range(6):
        names = {p.name for p in (out / f"case{i}").iterdir()}
        assert names == {f"case{i}_seg.nii.gz", f"case{i}_prob.nii.gz", f"case{i}_report.json", MANIFEST_NAME,
                         THUMBNAIL_NAME}, names  # fmt: skip
    # each process loads once, and only when it gets a case: the new one may have found none left;
    # the table counts the workers alive at its end, and the nanny's restart may still be under way
    assert table.attrs["run"]["workers"] in (1, 2) and table.attrs["run"]["model_loads"] <= 2
