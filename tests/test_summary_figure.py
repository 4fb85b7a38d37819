"""The summary figure: written by a real ``medseg segment --figure`` run, drawn in the
patient's frame at the scan's physical aspect, volumes against the expected ranges."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from napari_medseg.cli import main
from napari_medseg.io import write_volume
from napari_medseg.preprocess import reorient
from napari_medseg.export.figure import (
    FigureUnavailableError,
    display_planes,
    foreground_centre,
    render_summary,
    require_matplotlib,
)
from tests.small_real import EXPECTED_VOLUME_ML, small_real_scan, tiny_coarse_bundle, tiny_coarse_model


@pytest.fixture(scope="module")
def scan(shared_data):
    return small_real_scan(shared_data)


@pytest.fixture(scope="module")
def scan_file(scan, tmp_path_factory):
    return write_volume(tmp_path_factory.mktemp("scan") / "dev4mm.nii.gz", scan.array, scan)


@pytest.mark.parametrize("uncertainty", ["mc-dropout", "none"])
def test_segment_figure_is_written_with_the_result_set(scan_file, tmp_path, uncertainty, capsys, artifacts_dir):
    import shutil

    import imageio.v3 as iio

    bundle = tiny_coarse_bundle(tmp_path / "models")
    out = tmp_path / "out"
    argv = ["segment", str(scan_file), "-o", str(out), "--model", str(bundle), "--device", "cpu", "--quiet", "--figure",
            "--uncertainty", uncertainty, "--samples", "2"]  # fmt: skip
    assert main(argv) == 0
    figure = out / "dev4mm_summary.png"
    assert str(figure) in capsys.readouterr().out
    assert json.loads((out / "dev4mm_report.json").read_text())["outputs"]["figure"] == figure.name
    picture = iio.imread(figure)
    assert picture.shape[1] >= 1200 and picture.shape[0] >= (700 if uncertainty != "none" else 400)
    rgb = picture[..., :3].astype(int)
    assert rgb.std() > 30  # not blank
    colourful = (np.abs(rgb[..., 0] - rgb[..., 1]) + np.abs(rgb[..., 1] - rgb[..., 2])) > 60
    assert colourful.mean() > 0.02  # label overlay, uncertainty colours, bars
    assert not list(out.rglob("*.part"))  # no temporary left behind
    shutil.copy(figure, artifacts_dir / f"summary_figure_{uncertainty}.png")  # for people to look at


def test_a_second_run_without_figure_removes_the_stale_one(scan_file, tmp_path):
    bundle = tiny_coarse_bundle(tmp_path / "models")
    out = tmp_path / "out"
    base = ["segment", str(scan_file), "-o", str(out), "--model", str(bundle), "--device", "cpu", "--quiet"]
    assert main([*base, "--figure"]) == 0 and (out / "dev4mm_summary.png").is_file()
    assert main([*base, "--overwrite"]) == 0
    assert not (out / "dev4mm_summary.png").exists()  # the set is replaced as a whole


def test_planes_are_in_the_patient_frame_whatever_the_storage_order(scan):
    labels = (scan.array > np.percentile(scan.array, 70)).astype(np.uint8)
    stored, transform = reorient(scan, "ASR")  # another axis order and other flips, same voxels in space
    assert not transform.is_identity
    other_labels = transform.apply(labels)
    centre = foreground_centre(labels, scan)
    assert centre == foreground_centre(other_labels, stored)
    for ours, theirs in zip(display_planes(scan.array, scan, centre), display_planes(stored.array, stored, centre)):
        np.testing.assert_array_equal(ours, theirs)


def test_bars_show_volumes_and_expected_intervals(scan):
    model = tiny_coarse_model()
    labels = np.zeros(scan.shape, np.uint8)
    labels[10:20, 10:30, 10:25] = 3
    volumes = {"CSF": 900.0, "grey matter": 600.0, "white matter": 12.0}
    figure = render_summary(scan, labels, model.config, volumes_ml=volumes, title="case", notes=["a note"])
    bars = figure.axes[-1]
    widths = sorted(round(p.get_width(), 2) for p in bars.patches)
    ranges = sorted(round(hi - lo, 2) for lo, hi in EXPECTED_VOLUME_ML.values())
    assert widths == sorted([*volumes.values(), *ranges])
    texts = [t.get_text() for t in bars.texts]
    assert "900 mL  outside range" in texts and "600 mL" in texts and "12 mL  outside range" in texts
    assert [t.get_text() for t in bars.get_yticklabels()] == ["CSF", "grey matter", "white matter"]
    assert len(figure.axes) == 4  # three planes and the bars: no uncertainty row without a map


def test_bad_shapes_are_refused(scan):
    model = tiny_coarse_model()
    with pytest.raises(ValueError, match=r"labels of shape \(2, 2, 2\)"):
        render_summary(scan, np.zeros((2, 2, 2), np.uint8), model.config, volumes_ml={})


def test_without_matplotlib_the_error_names_the_extra_before_any_work(monkeypatch, scan_file, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    with pytest.raises(FigureUnavailableError, match=r"napari-medseg\[figure\]"):
        require_matplotlib()
    out = tmp_path / "out"
    assert main(["segment", str(scan_file), "-o", str(out), "--model", "no-such-model", "--figure"]) == 2
    assert "--figure: the summary figure needs matplotlib: pip install 'napari-medseg[figure]'" in capsys.readouterr().err
    assert not out.exists()
