"""One case without Dask: its files, manifest and thumbnail, its table row, its layers, the QC page."""

from __future__ import annotations

import io
import zlib
from dataclasses import replace

import numpy as np
import pytest

from napari_medseg.batch.case import CaseError, portable, run_case
from napari_medseg.batch.inputs import discover_cases
from napari_medseg.batch.manifest import DAMAGED, FINISHED, MANIFEST_NAME, THUMBNAIL_NAME, case_state
from napari_medseg.batch.plan import make_plan
from napari_medseg.batch.qc import png_bytes, write_qc_page
from napari_medseg.batch.review import case_layers
from napari_medseg.batch.table import failed_row, make_table, pending_row, read_table, write_table
from napari_medseg.models import load_model
from tests.batch.conftest import write_scans


@pytest.fixture
def finished_case(bundle, tmp_path):
    """A cohort folder with one finished case and one failed case, and its table."""
    scans = write_scans(tmp_path / "scans", [(6, 20, 18)]) + [tmp_path / "scans" / "missing.nii.gz"]
    scans[1].write_bytes(b"")  # empty: that case is recorded as failed without running
    case, missing = discover_cases(scans)
    plan = make_plan(str(bundle))
    out = tmp_path / "out"
    row = run_case(case, out, plan, load_model(bundle), worker="w")
    table = make_table([row, failed_row(missing, "VolumeReadError: empty")])
    write_table(table, out)
    return out, case, plan, table


def test_case_folder_manifest_and_state(finished_case):
    out, case, plan, table = finished_case
    folder = out / case.case_id
    assert {p.name for p in folder.iterdir()} == {
        "case0_seg.nii.gz", "case0_prob.nii.gz", "case0_report.json", MANIFEST_NAME, THUMBNAIL_NAME,
    }  # fmt: skip
    assert case_state(case, folder, model=plan.model_identity(), options=plan.options())[0] == FINISHED
    seg = folder / "case0_seg.nii.gz"
    seg.write_bytes(seg.read_bytes()[:-10])
    assert case_state(case, folder, model=plan.model_identity(), options=plan.options())[0] == DAMAGED
    assert list(read_table(out).status) == ["done", "failed"]


def test_case_layers_share_the_scan_grid(finished_case):
    out, case, _, table = finished_case
    layers = case_layers(out, read_table(out).iloc[0].to_dict())
    (scan, scan_kwargs, scan_kind), (labels, label_kwargs, label_kind) = layers
    assert (scan_kind, label_kind) == ("image", "labels") and labels.shape == scan.shape == (6, 20, 18)
    assert np.allclose(label_kwargs["scale"], scan_kwargs["scale"]) and label_kwargs["name"] == "case0 segmentation"


def test_thumbnail_is_a_png_and_the_qc_page_lists_flagged_first(finished_case):
    out, case, _, table = finished_case
    png = (out / case.case_id / THUMBNAIL_NAME).read_bytes()
    image = pytest.importorskip("PIL.Image").open(io.BytesIO(png))
    assert image.mode == "RGB" and image.size[1] == 96
    page = write_qc_page(table, out, lambda case_id: png if case_id == "case0" else None).read_text()
    assert page.index("missing") < page.index(">case0<") and page.count("base64,") == 1


def test_csv_and_parquet_keep_the_column_types(finished_case):
    pa = pytest.importorskip("pyarrow")
    import pandas as pd
    import pyarrow.parquet as pq

    out, case, _, table = finished_case
    pending = discover_cases([case.path])[0]
    table = make_table([*table.to_dict("records"), pending_row(replace(pending, case_id="later"))])
    files = write_table(table, out)
    schema = pq.read_schema(files["parquet"])
    kinds = {name: schema.field(name).type for name in schema.names}
    for name in ("ood_score", "fg_epistemic_nats", "vol_grey_matter_ml", "seconds", "network_s"):
        assert pa.types.is_float64(kinds[name]), (name, kinds[name])  # also when empty in every row
    for name in ("status", "error", "flags", "case_id", "device", "series_uid"):
        assert pa.types.is_string(kinds[name]) or pa.types.is_large_string(kinds[name]), (name, kinds[name])
    assert pa.types.is_boolean(kinds["flagged"]) and pa.types.is_boolean(kinds["ood_flag"])

    from_parquet, from_csv = read_table(files["parquet"]), read_table(files["csv"])
    for read in (from_parquet, from_csv):
        assert dict(read.dtypes) == dict(table.dtypes)
        pd.testing.assert_frame_equal(read, table)
    assert list(table.status) == ["done", "pending", "failed"]  # sorted by case id: case0, later, missing
    assert table.ood_flag.isna().tolist() == [False, True, True] and table.fg_epistemic_nats.isna().all()


def test_a_table_with_a_value_of_the_wrong_type_is_refused_naming_it(tmp_path):
    (tmp_path / "cohort.csv").write_text("case_id,status,seconds,flagged\na,done,fast,True\n")
    with pytest.raises(ValueError, match=r"cohort.csv: column 'seconds': .*fast"):
        read_table(tmp_path)
    (tmp_path / "cohort.csv").write_text("case_id,status,seconds,flagged\na,done,1.5,maybe\n")
    with pytest.raises(ValueError, match=r"column 'flagged': 'maybe' is not a truth value"):
        read_table(tmp_path)


def test_png_bytes_round_trip():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    data = png_bytes(rgb)
    raw = zlib.decompress(data[data.index(b"IDAT") + 4 : data.index(b"IEND") - 8])
    assert raw == b"\0" + rgb[0].tobytes() + b"\0" + rgb[1].tobytes()


def test_errors_that_cannot_travel_become_case_errors():
    class Local(Exception):  # defined in a function: pickle cannot find it again
        pass

    kept = ValueError("plain")
    assert portable(kept) is kept
    converted = portable(Local("boom"))
    assert isinstance(converted, CaseError) and str(converted) == "Local: boom"


def test_moved_inputs_with_the_same_content_stay_finished(finished_case, tmp_path):
    out, case, plan, _ = finished_case
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "case0.nii.gz").write_bytes(open(case.path, "rb").read())
    (moved_case,) = discover_cases([moved / "case0.nii.gz"])
    state, _ = case_state(moved_case, out / case.case_id, model=plan.model_identity(), options=plan.options())
    assert state == FINISHED
    (moved / "case0.nii.gz").write_bytes(b"other content")
    state, _ = case_state(moved_case, out / case.case_id, model=plan.model_identity(), options=plan.options())
    assert state == "changed"
