"""Which cases a cohort holds: files, DICOM series, folders, CSV lists, BIDS datasets."""

from __future__ import annotations

import shutil

import pytest

from napari_medseg.batch.inputs import discover_cases
from tests.batch.conftest import write_scans


def test_files_and_a_recursive_folder(tmp_path):
    write_scans(tmp_path / "a", [(4, 8, 8)])
    write_scans(tmp_path / "b" / "deep", [(4, 8, 8)], seed=1)  # same stem "case0": parent folder prefixed
    (tmp_path / "a" / "notes.txt").write_text("not a scan")
    cases = discover_cases([tmp_path])
    assert [c.case_id for c in cases] == ["a_case0", "deep_case0"]
    assert all(c.files == (c.path,) and c.stem == "case0" for c in cases)


def test_one_case_per_dicom_series(tmp_path, pydicom_files):
    source = pydicom_files / "dicomdirtests" / "98892001"
    shutil.copytree(source / "CT5N", tmp_path / "study" / "CT5N")
    shutil.copytree(source / "CT2N", tmp_path / "study" / "CT2N")
    cases = discover_cases([tmp_path / "study"])
    assert [c.case_id for c in cases] == ["CT2N", "CT5N"]
    ct5 = cases[1]
    assert ct5.series_uid and len(ct5.files) == 5 and ct5.stem == "CT5N"


def test_bids_dataset(tmp_path):
    root = tmp_path / "bids"
    (root / "dataset_description.json").parent.mkdir(parents=True)
    (root / "dataset_description.json").write_text("{}")
    scan = write_scans(tmp_path / "src", [(4, 8, 8)])[0]
    for relative in ("sub-01/anat/sub-01_T1w.nii.gz", "sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz",
                     "sub-02/ses-1/anat/sub-02_ses-1_T2w.nii.gz"):  # fmt: skip
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(scan, root / relative)
    assert [c.case_id for c in discover_cases([root])] == ["sub-01", "sub-02_ses-1"]


def test_csv_with_path_and_case_id_columns(tmp_path):
    write_scans(tmp_path / "scans", [(4, 8, 8), (4, 8, 8)])
    table = tmp_path / "cohort.csv"
    table.write_text("path,case_id\nscans/case0.nii.gz,P001\nscans/case1.nii.gz,\n")
    cases = discover_cases([table])
    assert [(c.case_id, c.path) for c in cases] == [
        ("P001", str(tmp_path / "scans" / "case0.nii.gz")),
        ("case1", str(tmp_path / "scans" / "case1.nii.gz")),
    ]


def test_output_folder_inside_an_input_is_not_scanned(tmp_path):
    write_scans(tmp_path, [(4, 8, 8)])
    write_scans(tmp_path / "out" / "case0", [(4, 8, 8)])  # results of an earlier run
    assert [c.case_id for c in discover_cases([tmp_path], exclude=tmp_path / "out")] == ["case0"]


def test_errors_name_the_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        discover_cases([tmp_path / "missing.nii.gz"])
    bad = tmp_path / "list.csv"
    bad.write_text("subject,scan\n1,a.nii.gz\n")
    with pytest.raises(ValueError, match=r"list.csv: no path column.*'scan', 'subject'"):
        discover_cases([bad])
