"""``medseg evaluate`` end to end on files written with write_volume, and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_medseg.cli import main
from napari_medseg.io import write_volume
from napari_medseg.types import Geometry

GEOMETRY = Geometry(
    spacing=(2.0, 0.8, 0.5),
    origin=(-10.0, 20.0, 5.0),
    direction=((0.0, 1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
)


def _pair(tmp_path):
    ref = np.zeros((10, 10, 10), np.uint8)
    pred = np.zeros_like(ref)
    ref[3:5, 3:5, 2:6] = 1
    pred[3:5, 3:5, 4:8] = 1  # shifted 2 voxels along x: Dice 0.5, HD95 2 * 0.5 mm
    ref[7:9, 7:9, 7:9] = 2
    pred[7:9, 7:9, 7:9] = 2
    pred[0, 0, 0] = 3  # only predicted
    return (
        write_volume(tmp_path / "pred.nii.gz", pred, GEOMETRY),
        write_volume(tmp_path / "ref.nrrd", ref, GEOMETRY),
    )


def test_evaluate_end_to_end(tmp_path, capsys):
    pred, ref = _pair(tmp_path)
    output = tmp_path / "metrics.json"
    code = main(["evaluate", str(pred), str(ref), "--classes", "bar", "cube", "speck", "--output", str(output)])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(output.read_text()) == printed
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left
    classes = printed["classes"]
    assert list(classes) == ["bar", "cube", "speck"]
    assert classes["bar"]["dice"] == 0.5
    assert classes["bar"]["hd95_mm"] == pytest.approx(1.0)
    assert classes["cube"]["dice"] == 1.0 and classes["cube"]["hd95_mm"] == 0.0
    assert classes["speck"]["hd95_mm"] is None  # inf: only in pred
    assert (classes["speck"]["present_pred"], classes["speck"]["present_ref"]) == (True, False)
    assert classes["speck"]["volume_diff_ml"] == pytest.approx(0.8e-3)
    assert printed["mean_dice"] == pytest.approx(0.5)
    assert printed["shape_zyx"] == [10, 10, 10]


def test_default_class_names(tmp_path, capsys):
    pred, ref = _pair(tmp_path)
    assert main(["evaluate", str(pred), str(ref)]) == 0
    assert list(json.loads(capsys.readouterr().out)["classes"]) == ["class_1", "class_2", "class_3"]


def test_grid_mismatch_names_both_files(tmp_path, capsys):
    pred, _ = _pair(tmp_path)
    shifted = Geometry(spacing=GEOMETRY.spacing, origin=(-10.0, 20.0, 5.01), direction=GEOMETRY.direction)
    other = write_volume(tmp_path / "other.nii.gz", np.zeros((10, 10, 10), np.uint8), shifted)
    assert main(["evaluate", str(pred), str(other)]) == 2
    err = capsys.readouterr().err
    assert "pred.nii.gz" in err and "other.nii.gz" in err and "origin" in err

    smaller = write_volume(tmp_path / "small.nii.gz", np.zeros((10, 10, 9), np.uint8), GEOMETRY)
    assert main(["evaluate", str(pred), str(smaller)]) == 2
    assert "(10, 10, 10) vs (10, 10, 9)" in capsys.readouterr().err


def test_too_few_class_names(tmp_path, capsys):
    pred, ref = _pair(tmp_path)
    assert main(["evaluate", str(pred), str(ref), "--classes", "bar"]) == 2
    assert "values up to 3" in capsys.readouterr().err


def test_missing_output_folder_fails_before_reading(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "metrics.json"
    assert main(["evaluate", str(tmp_path / "a.nii.gz"), str(tmp_path / "b.nii.gz"), "-o", str(missing)]) == 2
    assert "nowhere" in capsys.readouterr().err


@pytest.mark.parametrize("value", [1025, 65535, 10_000_000])
def test_a_large_label_value_compares_the_values_present_only(tmp_path, capsys, caplog, value):
    """One voxel valued 65535 would need a 65536 x 65536 table of counts: only present values are compared."""
    ref = np.zeros((6, 6, 6), np.int32)
    ref[1:3, 1:3, 1:3] = 1
    pred = ref.copy()
    pred[5, 5, 5] = value
    kind = "image" if value > 65535 else "labels"  # some tools store labels as float32 (exact below 2**24)
    pred_path = write_volume(tmp_path / "pred.nii.gz", pred, GEOMETRY, kind=kind)
    ref_path = write_volume(tmp_path / "ref.nii.gz", ref, GEOMETRY)
    assert main(["evaluate", str(pred_path), str(ref_path)]) == 0
    captured = capsys.readouterr()
    classes = json.loads(captured.out)["classes"]
    assert set(classes) == {"class_1", f"class_{value}"}
    assert classes["class_1"]["dice"] == 1.0 and classes[f"class_{value}"]["index"] == value
    assert classes[f"class_{value}"]["present_pred"] and not classes[f"class_{value}"]["present_ref"]
    assert f"{pred_path} holds label value {value}" in caplog.text


def test_a_large_label_value_beyond_the_given_names_names_the_file(tmp_path, capsys):
    pred = np.zeros((4, 4, 4), np.uint16)
    pred[0, 0, 0] = 65535
    pred_path = write_volume(tmp_path / "pred.nii.gz", pred, GEOMETRY)
    ref_path = write_volume(tmp_path / "ref.nii.gz", np.zeros((4, 4, 4), np.uint8), GEOMETRY)
    assert main(["evaluate", str(pred_path), str(ref_path), "--classes", "a", "b"]) == 2
    err = capsys.readouterr().err
    assert f"{pred_path} holds values up to 65535 but --classes names only 2" in err and "Traceback" not in err
