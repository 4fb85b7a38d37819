"""``medseg segment --dicom-seg``: a DICOM SEG beside the NIfTI outputs, aligned with them."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from napari_medseg.cli import main
from napari_medseg.io import read_volume, write_volume
from napari_medseg.io.dicom_seg import read_dicom_seg
from tests.dicom_series import oblique_direction, write_series


@pytest.fixture(scope="module")
def dicom_scan(tmp_path_factory):
    """An oblique DICOM series of a bright ball (its folder's name is the output stem)."""
    folder = tmp_path_factory.mktemp("cases") / "head"
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in (10, 20, 18)], indexing="ij")
    write_series(folder, 400 * (z**2 + y**2 + x**2 < 0.6), (1.5, 1.0, 1.1), (10.0, -20.0, 5.0), oblique_direction())
    return folder


@pytest.fixture(scope="module")
def bundle_with_values(tmp_path_factory):
    """A tiny bundle whose classes are written as FreeSurfer-style label values."""
    from napari_medseg.config import ModelConfig
    from napari_medseg.models import build_model, save_bundle
    from tests.tiny_models import tiny_config

    data = tiny_config().to_dict()
    data["class_names"] = ["background", "left hippocampus", "right hippocampus", "CSF"]
    data["extra"]["label_values"] = [0, 17, 53, 24]
    torch.manual_seed(0)
    return save_bundle(build_model(ModelConfig.from_dict(data)).eval(), tmp_path_factory.mktemp("m") / "values", meta={})


def _segment(scan, bundle, out, *extra) -> int:
    return main(["segment", str(scan), "-o", str(out), "--model", str(bundle), "--device", "cpu", "--quiet", *extra])


def test_dicom_input_gets_a_seg_aligned_with_the_nifti_labels(dicom_scan, bundle_with_values, tmp_path):
    out = tmp_path / "out"
    assert _segment(dicom_scan, bundle_with_values, out) == 0
    nifti = read_volume(out / "head_seg.nii.gz")
    seg = read_volume(out / "head_seg.dcm")  # no series beside it: its own frame geometry...
    placed = read_dicom_seg(out / "head_seg.dcm", source=read_volume(dicom_scan))  # ...or the scan's grid
    assert placed.geometry == nifti.geometry
    values = {s["number"]: s["label_value"] for s in placed.meta["segments"]}
    assert values == {1: 17, 2: 53, 3: 24}
    assert [s["label"] for s in placed.meta["segments"]] == ["left hippocampus", "right hippocampus", "CSF"]
    np.testing.assert_array_equal(np.array([0, 17, 53, 24])[placed.array], nifti.array)
    assert np.count_nonzero(seg.array) == np.count_nonzero(nifti.array)


def test_seg_copied_beside_its_series_opens_on_the_series_grid(dicom_scan, bundle_with_values, tmp_path):
    out = tmp_path / "out"
    assert _segment(dicom_scan, bundle_with_values, out) == 0
    case = tmp_path / "case"
    shutil.copytree(dicom_scan, case)
    shutil.copy(out / "head_seg.dcm", case / "head_seg.dcm")
    seg = read_volume(case / "head_seg.dcm")
    nifti = read_volume(out / "head_seg.nii.gz")
    assert seg.warnings == [] and seg.geometry == nifti.geometry
    np.testing.assert_array_equal(np.array([0, 17, 53, 24])[seg.array], nifti.array)


def test_no_dicom_seg_writes_none(dicom_scan, bundle_with_values, tmp_path):
    out = tmp_path / "out"
    assert _segment(dicom_scan, bundle_with_values, out, "--no-dicom-seg") == 0
    assert (out / "head_seg.nii.gz").is_file() and not (out / "head_seg.dcm").exists()


def test_dicom_seg_for_a_nifti_input_is_refused_naming_it(dicom_scan, bundle_with_values, tmp_path, capsys):
    scan = read_volume(dicom_scan)
    nifti = write_volume(tmp_path / "scan.nii.gz", scan.array, scan)
    assert _segment(nifti, bundle_with_values, tmp_path / "out", "--dicom-seg") == 2
    err = capsys.readouterr().err
    assert "--dicom-seg" in err and "scan.nii.gz" in err and "not read from DICOM" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_nifti_input_gets_no_seg_by_default(dicom_scan, bundle_with_values, tmp_path):
    scan = read_volume(dicom_scan)
    nifti = write_volume(tmp_path / "scan.nii.gz", scan.array, scan)
    assert _segment(nifti, bundle_with_values, tmp_path / "out") == 0
    assert not list((tmp_path / "out").glob("*.dcm"))
