"""``medseg info`` on real files, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys

from napari_medseg.cli import main


def test_info_text_on_oblique_nifti(shared_data, capsys):
    assert main(["info", str(shared_data / "dev-subject" / "t1.nii.gz")]) == 0
    out = capsys.readouterr().out
    assert "142 x 178 x 142 voxels" in out
    assert "oblique orientation" in out
    assert "spacing" in out and "origin" in out and "direction" in out


def test_info_json_on_ct(pydicom_files, capsys):
    assert main(["info", "--json", str(pydicom_files / "CT_small.dcm")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["modality"] == "CT"
    assert summary["intensity_range"][0] < -800
    assert summary["shape_zyx"] == [1, 128, 128]
    assert any("single slice" in w for w in summary["warnings"])


def test_info_lists_dicom_series(pydicom_files, capsys):
    assert main(["info", str(pydicom_files / "dicomdirtests")]) == 0
    out = capsys.readouterr().out
    assert out.count("files,") > 3
    assert "not evenly spaced" in out


def test_info_anisotropy_warning(tmp_path, capsys):
    import numpy as np

    from napari_medseg.io import write_volume
    from napari_medseg.types import Geometry

    path = write_volume(tmp_path / "thick.nrrd", np.zeros((4, 8, 8), np.float32), Geometry((5.0, 0.5, 0.5), (0, 0, 0)))
    assert main(["info", str(path)]) == 0
    assert "very anisotropic spacing" in capsys.readouterr().out


def test_info_bad_path_fails_with_message(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "napari_medseg.cli.main", "info", str(tmp_path / "missing.nii")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "missing.nii: no such file or folder" in result.stderr
