"""Cohorts on a real local cluster (2 worker processes): results, failures, resume, repair."""

from __future__ import annotations

import gzip
import hashlib
import json
import signal
import subprocess
import sys
import time

import pytest

from napari_medseg.batch import read_table, run_cohort
from napari_medseg.batch.manifest import MANIFEST_NAME
from napari_medseg.cli import main
from napari_medseg.control import Cancelled
from napari_medseg.export.result_set import ResultsExistError
from tests.batch.conftest import write_scans

VOLATILE_REPORT_KEYS = ("created", "timings_s")  # a time stamp and measured seconds


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def gunzipped(path) -> bytes:
    """A .nii.gz file's NIfTI bytes (header and voxels); raises when the gzip stream is cut."""
    return gzip.decompress(path.read_bytes())


def seg_content(path) -> tuple:
    """A DICOM SEG's segments and frames, without the UIDs and times each write makes anew."""
    import pydicom

    ds = pydicom.dcmread(path)
    return [s.SegmentLabel for s in ds.SegmentSequence], ds.PixelData, ds.ReferencedSeriesSequence[0].SeriesInstanceUID


def case_files(folder) -> dict[str, tuple[str, int]]:
    """File name -> (hash, mtime_ns) of every file in a case folder."""
    return {p.name: (sha256(p), p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file()}


def test_cohort_matches_segment_and_records_the_failure(cohort_folder, bundle, client, tmp_path):
    out = tmp_path / "out"
    table = run_cohort([cohort_folder], out, client, model=str(bundle), retries=1)

    assert sorted(table.case_id) == ["CT5N", "broken", "case0", "case1", "case2", "case3"]
    failed = table[table.status == "failed"]
    assert list(failed.case_id) == ["broken"] and failed.flagged.all()
    assert "VolumeReadError" in failed.error.iloc[0] and "broken.nii.gz" in failed.error.iloc[0]
    assert (table.status == "done").sum() == 5
    run = table.attrs["run"]
    assert (run["ran"], run["failed"], run["resumed"]) == (5, 1, 0)
    assert run["model_loads"] == run["workers"] == 2  # one model per worker process, reused for every case

    on_disk = read_table(out / "cohort.csv")
    assert list(on_disk.case_id) == list(table.case_id) and "vol_grey_matter_ml" in on_disk.columns
    page = (out / "qc.html").read_text()
    assert page.index("broken") < page.index("case0")  # flagged cases first
    assert page.count("data:image/png;base64,") == 5 and "function sortBy" in page

    # every case holds what `medseg segment` writes for that input: the same NIfTI files byte for byte,
    # the same report but for its time stamp and timings,
    # and for the DICOM series the same SEG segments and frames (its UIDs are new at each write)
    for case_id, source in [(f"case{i}", cohort_folder / f"case{i}.nii.gz") for i in range(4)] + [
        ("CT5N", cohort_folder / "dicom" / "CT5N")
    ]:
        reference = tmp_path / "reference" / case_id
        assert main(["segment", str(source), "-o", str(reference), "--model", str(bundle), "--quiet"]) == 0
        expected = {p.name for p in reference.iterdir()}
        produced = {p.name for p in (out / case_id).iterdir()} - {MANIFEST_NAME, "medseg-qc.png"}
        assert produced == expected
        for name in expected:
            if name.endswith(".json"):
                ours, theirs = (json.loads((d / name).read_text()) for d in (out / case_id, reference))
                for key in VOLATILE_REPORT_KEYS:
                    ours.pop(key), theirs.pop(key)
                assert ours == theirs, name
            elif name.endswith(".dcm"):  # a DICOM SEG gets new UIDs and times at each write
                assert seg_content(out / case_id / name) == seg_content(reference / name), name
            else:  # NIfTI files byte for byte, gzip header included (no write time in it) ...
                assert sha256(out / case_id / name) == sha256(reference / name), name
                # ... so the manifest's output hashes are those of any run on the same input
                manifest = json.loads((out / case_id / MANIFEST_NAME).read_text())
                assert manifest["outputs"][name]["sha256"] == sha256(reference / name), name


def test_rerun_skips_finished_cases_and_redoes_damaged_ones(cohort_folder, bundle, client, tmp_path):
    out = tmp_path / "out"
    run_cohort([cohort_folder], out, client, model=str(bundle), retries=0)
    before = {case: case_files(out / case) for case in ("case0", "case1", "case2", "CT5N")}

    # a half-written case: a truncated output left behind, with the manifest ...
    damaged = out / "case3" / "case3_prob.nii.gz"
    damaged.write_bytes(damaged.read_bytes()[:100])
    # ... and one without a manifest (a run that died between its outputs and the manifest)
    (out / "case2" / MANIFEST_NAME).unlink()
    table = run_cohort([cohort_folder], out, client, model=str(bundle), retries=0)

    run = table.attrs["run"]
    assert (run["ran"], run["resumed"], run["failed"]) == (2, 3, 1)  # case2, case3 redone; broken tried again
    assert set(table[~table.resumed & (table.status == "done")].case_id) == {"case2", "case3"}
    for case in ("case0", "case1", "CT5N"):
        assert case_files(out / case) == before[case]  # untouched: same bytes, same times
    assert len(damaged.read_bytes()) > 100 and gunzipped(damaged)  # whole again
    assert not list(out.glob("*/.medseg-staging-*"))


def test_interrupted_cohort_continues_where_it_stopped(bundle, client, tmp_path):
    scans = write_scans(tmp_path / "scans", [(10, 48, 48)] * 8)
    out = tmp_path / "out"
    with pytest.raises(Cancelled):
        run_cohort(scans, out, client, model=str(bundle), should_stop=lambda: True)  # stop after the first case
    _wait_until_idle(client)  # cases already running on the caller's cluster finish on their own
    finished = {p.parent.name for p in out.glob(f"*/{MANIFEST_NAME}")}
    interrupted = read_table(out)
    assert 1 <= len(finished) < 8 and (interrupted.status == "pending").any()
    before = {case: case_files(out / case) for case in finished}

    table = run_cohort(scans, out, client, model=str(bundle))
    assert table.attrs["run"]["ran"] == 8 - len(finished)
    assert set(table[table.resumed].case_id) == finished and (table.status == "done").all()
    for case in finished:
        assert case_files(out / case) == before[case]


def test_other_options_refuse_without_overwrite(bundle, client, tmp_path):
    scans = write_scans(tmp_path / "scans", [(4, 12, 12)])
    out = tmp_path / "out"
    run_cohort(scans, out, client, model=str(bundle))
    with pytest.raises(ResultsExistError, match=r"case0 holds results made with options postprocessing=True"):
        run_cohort(scans, out, client, model=str(bundle), postprocessing=False)
    table = run_cohort(scans, out, client, model=str(bundle), postprocessing=False, overwrite=True)
    assert table.attrs["run"]["ran"] == 1


def test_cli_on_a_running_scheduler(cohort_folder, bundle, client, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["batch", str(cohort_folder), "-o", str(out), "--model", str(bundle), "--scheduler", client.scheduler.address,
            "--retries", "0"]  # fmt: skip
    assert main(argv) == 1  # a case failed
    captured = capsys.readouterr()
    assert "5 cases segmented, 0 finished earlier, 1 failed" in captured.out
    assert "failed: broken: VolumeReadError" in captured.err and "cohort: 6/6 cases" in captured.err
    # the line says where the scheduler's dashboard is, or why there is none
    if "dashboard" in client.scheduler_info().get("services", {}):
        assert f"Dask dashboard: {client.dashboard_link}" in captured.err
    else:
        assert "Dask dashboard: none (the scheduler serves one when bokeh is installed)" in captured.err
    assert (out / "cohort.csv").is_file() and (out / "qc.html").is_file()


def test_ctrl_c_writes_the_table_and_exits_130(bundle, client, tmp_path):
    write_scans(tmp_path / "scans", [(16, 64, 64)] * 10)
    out = tmp_path / "out"
    command = [sys.executable, "-c", "import sys; from napari_medseg.cli import main; sys.exit(main())", "batch",
               str(tmp_path / "scans"), "-o", str(out), "--model", str(bundle), "--scheduler", client.scheduler.address]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stderr:  # without a terminal the progress line comes every 10%
        if line.startswith("cohort: ") and not line.startswith("cohort: 0/"):
            break
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 130 and "interrupted" in rest
    table = read_table(out)
    assert len(table) == 10 and (table.status == "pending").any() and (table.status == "done").any()
    assert not (out / ".medseg-cohort.lock").exists()
    _wait_until_idle(client)


def _executing(dask_worker=None) -> int:
    return dask_worker.state.executing_count


def _wait_until_idle(client, timeout: float = 60) -> None:
    """Until no worker runs a task: a cancelled case still running is not in the scheduler's view."""
    deadline = time.monotonic() + timeout
    while sum(client.run(_executing).values()) and time.monotonic() < deadline:
        time.sleep(0.1)


def test_figures_are_written_per_case_and_linked_from_the_qc_page(bundle, client, tmp_path):
    pytest.importorskip("matplotlib")
    scans = write_scans(tmp_path / "scans", [(8, 24, 24), (6, 20, 20)])
    out = tmp_path / "out"
    run_cohort(scans, out, client, model=str(bundle))
    table = run_cohort(scans, out, client, model=str(bundle), figure=True, overwrite=True)
    assert table.attrs["run"]["ran"] == 2  # asking for figures redoes the cases that have none
    page = (out / "qc.html").read_text()
    for case_id in table["case_id"]:
        (figure,) = (out / case_id).glob("*_summary.png")
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'href="{case_id}/{figure.name}"' in page
    again = run_cohort(scans, out, client, model=str(bundle), figure=True)
    assert again.attrs["run"]["resumed"] == 2


def test_a_cohort_runs_on_an_external_model_folder(client, tmp_path):
    """A MONAI bundle folder (no meta.json): the plan hashes its configs and weights, the
    cases run, and a changed model.pt is another model for the resume check."""
    pytest.importorskip("monai")
    from napari_medseg.batch.plan import make_plan
    from tests.models.external.monai_bundle import write_bundle

    model = write_bundle(tmp_path / "bundle")
    plan = make_plan(str(model), uncertainty="tta")
    assert plan.ensemble == () and len(plan.weights_sha256) == 64
    scans = write_scans(tmp_path / "scans", [(6, 20, 20)] * 2)
    table = run_cohort(scans, tmp_path / "out", client, model=str(model))
    assert (table.status == "done").all(), table.error.tolist()
    write_bundle(model, seed=1)  # other weights, same files
    assert make_plan(str(model)).weights_sha256 != plan.weights_sha256
    with pytest.raises(ResultsExistError):
        run_cohort(scans, tmp_path / "out", client, model=str(model))
