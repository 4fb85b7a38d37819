"""``medseg segment`` and ``medseg models`` end to end with a tiny real bundle."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_medseg.cli import main
from napari_medseg.io import read_volume, write_volume
from napari_medseg.types import Geometry
from tests.tiny_models import tiny_bundle


@pytest.fixture
def oblique_scan(tmp_path):
    angle = 0.2
    direction = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in (14, 22, 20)], indexing="ij")
    array = (100 * (z**2 + y**2 + x**2 < 0.6)).astype(np.int16)
    return write_volume(tmp_path / "scan.nii.gz", array, Geometry((1.2, 0.9, 1.0), (3.0, -4.0, 5.0), direction))


@pytest.fixture
def bundle(tmp_path):
    return tiny_bundle(tmp_path / "models", postprocess={"largest_component": True})


def test_segment_writes_outputs_with_input_geometry(oblique_scan, bundle, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["segment", str(oblique_scan), "-o", str(out), "--model", str(bundle), "--device", "cpu"]) == 0
    source = read_volume(oblique_scan)
    seg = read_volume(out / "scan_seg.nii.gz")
    prob = read_volume(out / "scan_prob.nii.gz", keep_channels=True)
    assert seg.geometry == source.geometry and prob.geometry == source.geometry
    assert seg.array.dtype == np.uint8 and prob.array.shape == (*source.shape, 4)
    np.testing.assert_allclose(prob.array.sum(axis=-1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(seg.array, prob.array.argmax(axis=-1))
    report = json.loads((out / "scan_report.json").read_text())
    assert report["model"]["name"] == "tiny-unet" and report["model"]["weights_sha256"]
    assert report["classes"] == ["background", "CSF", "grey matter", "white matter"]
    assert set(report["volume_ml"]) == {"CSF", "grey matter", "white matter"}
    voxel_ml = 1.2 * 0.9 * 1.0 / 1000
    for k, name in enumerate(report["classes"][1:], start=1):
        assert report["volume_ml"][name] == pytest.approx((seg.array == k).sum() * voxel_ml)
        for row in report["components"][name]:
            assert len(row["centroid_mm_zyx"]) == 3
    assert {"preprocess", "network", "total"} <= set(report["timings_s"]) and report["device"] == "cpu"
    assert str(out / "scan_seg.nii.gz") in capsys.readouterr().out


def test_refine_runs_the_refinement_the_bundle_keeps_on_request_and_the_report_records_it(oblique_scan, tmp_path):
    refinement = {"prior_weight": 1.0, "keep_background": True, "on_request": True}
    bundle = tiny_bundle(tmp_path / "models", postprocess={"em_refine": refinement})
    reports = {}
    for extra in ([], ["--refine"]):
        out = tmp_path / ("refined" if extra else "default")
        assert main(["segment", str(oblique_scan), "-o", str(out), "--model", str(bundle), "--device", "cpu", *extra]) == 0
        reports[bool(extra)] = json.loads((out / "scan_report.json").read_text())["postprocess"]
    assert "em_refine" not in reports[False]
    assert reports[True]["em_refine"] == {"iterations": 12, **refinement}
    assert "mixture" in reports[True]["applied"]


def test_segment_dicom_folder_stem(pydicom_files, bundle, tmp_path):
    out = tmp_path / "dicom-out"
    folder = pydicom_files / "dicomdirtests" / "98892001" / "CT5N"
    assert main(["segment", str(folder), "-o", str(out), "--model", str(bundle), "--quiet"]) == 0
    assert (out / "CT5N_seg.nii.gz").is_file() and (out / "CT5N_report.json").is_file()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["segment", "{missing}", "-o", "{out}", "--model", "{bundle}"], "no such file or folder"),
        (["segment", "{scan}", "-o", "{out}", "--model", "{missing}"], "no such bundle folder"),
        (["segment", "{scan}", "-o", "{out}", "--model", "no-such-model"], "unknown model; available"),
    ],
)
def test_segment_errors_exit_nonzero(arguments, message, oblique_scan, bundle, tmp_path):
    values = {"missing": tmp_path / "missing.nii.gz", "out": tmp_path / "o", "bundle": bundle, "scan": oblique_scan}
    argv = [a.format(**values) for a in arguments]
    result = subprocess.run([sys.executable, "-m", "napari_medseg.cli.main", *argv], capture_output=True, text=True)
    assert result.returncode == 2
    assert message in result.stderr


def test_not_a_bundle_is_refused(oblique_scan, tmp_path):
    fake = tmp_path / "fake-model"
    fake.mkdir()
    (fake / "weights.pt").write_bytes(b"not a checkpoint")
    result = subprocess.run(
        [sys.executable, "-m", "napari_medseg.cli.main", "segment", str(oblique_scan), "-o", str(tmp_path / "o"), "--model", str(fake)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "fake-model" in result.stderr


def test_models_lists_user_bundles(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NAPARI_MEDSEG_HOME", str(tmp_path / "home"))
    tiny_bundle(tmp_path / "home" / "models", name="my-version")
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    mine = [r for r in rows if r["name"] == "my-version"]
    assert mine and mine[0]["shipped"] is False and mine[0]["architecture"] == "unet"
    assert main(["models", "rename", "my-version", "renamed"]) == 0
    assert main(["models", "delete", "renamed"]) == 0
    capsys.readouterr()
    assert main(["models"]) == 0
    assert "my-version" not in capsys.readouterr().out


def test_a_bundle_with_label_values_writes_them_and_reports_asymmetry(oblique_scan, tmp_path):
    """Classes written with the bundle's own values (FreeSurfer-style ids), read back exactly."""
    from napari_medseg.config import ModelConfig
    from napari_medseg.models import build_model, save_bundle
    from tests.tiny_models import tiny_config

    data = tiny_config().to_dict()
    data["class_names"] = ["background", "left hippocampus", "right hippocampus", "CSF"]
    data["extra"]["label_values"] = [0, 17, 53, 24]
    data["extra"]["expected_volume_ml"] = {"CSF": [1000.0, 2000.0]}  # far above a toy scan's
    torch.manual_seed(0)
    bundle = save_bundle(build_model(ModelConfig.from_dict(data)).eval(), tmp_path / "m" / "values", meta={})
    out = tmp_path / "out"
    assert main(["segment", str(oblique_scan), "-o", str(out), "--model", str(bundle), "--device", "cpu"]) == 0
    seg = read_volume(out / "scan_seg.nii.gz").array
    prob = read_volume(out / "scan_prob.nii.gz", keep_channels=True).array
    assert set(np.unique(seg)) <= {0, 17, 53, 24}
    np.testing.assert_array_equal(seg, np.array([0, 17, 53, 24])[prob.argmax(axis=-1)])
    report = json.loads((out / "scan_report.json").read_text())
    assert report["label_values"] == {"background": 0, "left hippocampus": 17, "right hippocampus": 53, "CSF": 24}
    assert report["volumes_outside_training_range"]["CSF"] == {"ml": pytest.approx(report["volume_ml"]["CSF"], abs=0.01), "range": [1000.0, 2000.0]}
    left, right = report["volume_ml"]["left hippocampus"], report["volume_ml"]["right hippocampus"]
    if left + right > 0:
        assert report["asymmetry_index_percent"]["hippocampus"] == pytest.approx(200 * (left - right) / (left + right), abs=0.01)


# --- results as a set: earlier results, a locked folder, failed writes, Ctrl-C ---------------
def _no_inference(*args, **kwargs):
    raise AssertionError("the segmentation ran although the run should have been refused before it")


def _segment(scan, bundle, out, *extra):
    return main(["segment", str(scan), "-o", str(out), "--model", str(bundle), "--device", "cpu", "--quiet", *extra])


def _case_files(out):
    return sorted(p.name for p in out.iterdir())


@pytest.fixture
def earlier(oblique_scan, bundle, tmp_path):
    """An output folder holding a complete earlier set for ``scan`` (with a Grad-CAM map)."""
    out = tmp_path / "out"
    assert _segment(oblique_scan, bundle, out, "--gradcam", "CSF") == 0
    return out


def test_earlier_results_refuse_the_run_before_inference(oblique_scan, bundle, earlier, monkeypatch, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in earlier.iterdir()}
    capsys.readouterr()
    monkeypatch.setattr("napari_medseg.inference.segment", _no_inference)
    assert _segment(oblique_scan, bundle, earlier) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "scan_gradcam_csf.nii.gz" in err and "--overwrite" in err
    assert {p.name: p.stat().st_mtime_ns for p in earlier.iterdir()} == before


def test_overwrite_replaces_the_whole_set(oblique_scan, bundle, earlier):
    old_report = json.loads((earlier / "scan_report.json").read_text())
    assert _segment(oblique_scan, bundle, earlier, "--overwrite") == 0
    # the Grad-CAM map of the earlier run is not part of the new set: gone, not left beside it
    assert _case_files(earlier) == ["scan_prob.nii.gz", "scan_report.json", "scan_seg.nii.gz"]
    report = json.loads((earlier / "scan_report.json").read_text())
    assert "gradcam" in old_report and "gradcam" not in report


@pytest.mark.parametrize("failing", ["scan_seg.nii.gz", "scan_prob.nii.gz", "scan_gradcam_csf.nii.gz", "scan_report.json"])
@pytest.mark.parametrize("with_earlier", [False, True])
def test_a_failed_write_leaves_no_partial_set_and_names_the_file(
    oblique_scan, bundle, tmp_path, monkeypatch, capsys, failing, with_earlier
):
    out = tmp_path / "out"
    if with_earlier:
        assert _segment(oblique_scan, bundle, out, "--gradcam", "CSF") == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()} if with_earlier else {}
    import napari_medseg.io
    import napari_medseg.export.report

    def disk_full(writer):
        def write(path, *args, **kwargs):
            if path.name == failing:
                raise OSError(28, "No space left on device")
            return writer(path, *args, **kwargs)

        return write

    monkeypatch.setattr(napari_medseg.io, "write_volume", disk_full(napari_medseg.io.write_volume))
    monkeypatch.setattr(napari_medseg.export.report, "write_json", disk_full(napari_medseg.export.report.write_json))
    capsys.readouterr()
    assert _segment(oblique_scan, bundle, out, "--gradcam", "CSF", "--overwrite") == 2
    err = capsys.readouterr().err
    assert f"could not write {out / failing}: No space left on device" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no staging folder, no lock, old set intact


def test_ctrl_c_during_the_run_keeps_the_old_set(oblique_scan, bundle, earlier, monkeypatch):
    before = {p.name: p.read_bytes() for p in earlier.iterdir()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("napari_medseg.explain.scan.explain_scan", interrupted)  # after seg and prob were written
    assert _segment(oblique_scan, bundle, earlier, "--gradcam", "CSF", "--overwrite") == 130
    assert {p.name: p.read_bytes() for p in earlier.iterdir()} == before


def test_a_second_run_into_a_locked_folder_fails_at_once(oblique_scan, bundle, tmp_path, monkeypatch, capsys):
    from napari_medseg.io.folder_lock import FolderLock
    from napari_medseg.export.result_set import LOCK_NAME

    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr("napari_medseg.inference.segment", _no_inference)
    with FolderLock(out / LOCK_NAME):
        assert _segment(oblique_scan, bundle, out) == 2
    err = capsys.readouterr().err
    assert f"output folder {out} is in use by process {os.getpid()}" in err and str(out / LOCK_NAME) in err
    assert _case_files(out) == []


# --- allocations refused before they are made: exit 2 naming the file and the number ---------
def _edited_bundle(bundle, tmp_path, **changes):
    """A copy of ``bundle`` whose config.json has ``changes`` (the weights stay the tiny ones)."""
    import shutil

    copy = shutil.copytree(bundle, tmp_path / "edited")
    config = json.loads((copy / "config.json").read_text())
    for key, value in changes.items():
        if key == "features":
            config["arch_kwargs"]["features"] = value
        else:
            config[key] = value
    (copy / "config.json").write_text(json.dumps(config))
    return copy


@pytest.mark.parametrize(
    ("case", "fragments"),
    [
        ("40 mm voxels", ["coarse.nii.gz: cannot resample its 64x64x64 voxels of 40x40x40 mm", "1x1x1 mm grid",
                          "2560x2560x2560 voxels", "more than this machine can hold"]),
        ("tiny target_spacing", ["edited", "target_spacing [1e-06, 1.0, 1.0] must lie between 0.01 and 100 mm"]),
        ("in_channels 1e7", ["edited", "in_channels 10000000 must be between 1 and 1024"]),
        ("absurd features", ["edited", "'features': [4, 8, 10000000]", "900,001,100,003,580 parameters",
                             "more than this machine can hold"]),
        ("out of memory", ["out of memory", "too large for this machine"]),
    ],
)  # fmt: skip
def test_allocations_too_large_are_refused_before_they_are_made(bundle, tmp_path, monkeypatch, capsys, case, fragments):
    monkeypatch.setattr("napari_medseg.io.limits.available_memory_bytes", lambda: 8 << 30)  # the same verdict everywhere
    scan = write_volume(tmp_path / "scan.nii.gz", np.zeros((8, 16, 16), np.int16), Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))
    model = bundle
    if case == "40 mm voxels":
        scan = write_volume(tmp_path / "coarse.nii.gz", np.ones((64, 64, 64), np.int16), Geometry((40.0,) * 3, (0.0,) * 3))
    elif case == "tiny target_spacing":
        model = _edited_bundle(bundle, tmp_path, target_spacing=[1e-6, 1.0, 1.0])
    elif case == "in_channels 1e7":
        model = _edited_bundle(bundle, tmp_path, in_channels=10_000_000)
    elif case == "absurd features":
        model = _edited_bundle(bundle, tmp_path, features=[4, 8, 10_000_000])
    elif case == "out of memory":  # an allocation no check foresaw
        def no_memory(*args, **kwargs):
            raise MemoryError

        monkeypatch.setattr("napari_medseg.inference.segment", no_memory)
    out = tmp_path / "out"
    assert _segment(scan, model, out) == 2
    err = capsys.readouterr().err
    assert all(fragment in err for fragment in fragments), err
    assert "Traceback" not in err
    assert not out.exists() or _case_files(out) == []
