"""``medseg segment`` names the OOD tests that flag a real CT, in its warning (stderr) and
in the report."""

from __future__ import annotations

import json

from napari_medseg.cli import main
from tests.tiny_models import tiny_bundle


def test_a_real_ct_given_to_an_mr_model_is_flagged_by_name(pydicom_files, tmp_path, caplog):
    bundle = tiny_bundle(tmp_path / "models")  # an MR model, without calibrated threshold
    out = tmp_path / "out"
    assert main(["segment", str(pydicom_files / "CT_small.dcm"), "-o", str(out), "--model", str(bundle), "--device", "cpu"]) == 0
    stderr = caplog.text  # the warning medseg logs to stderr (pytest captures the logging)
    assert "looks out of distribution" in stderr
    assert "modality: the scan is CT, the model was trained on MR" in stderr
    assert "hounsfield_air: 21.4% of the voxels lie below -500" in stderr
    (report_path,) = out.glob("*_report.json")
    ood = json.loads(report_path.read_text())["ood"]
    assert ood["flag"] is True and ood["flagged_by"] == ["modality", "hounsfield_air"]
    assert ood["signals"]["hounsfield_air"]["value"] == 0.214478  # 3514 of 16384 voxels
    assert ood["signals"]["score"]["flag"] is None and ood["signals"]["brain_volume"]["flag"] is None
