"""The panel's Segment job decides OOD on the network's own prediction and the panel's line
names the tests that flag: a real CT given to an MR model."""

from __future__ import annotations

from tests.tiny_models import tiny_model


def test_segment_job_returns_the_ood_decision_and_the_text_names_the_tests(pydicom_files):
    from napari_medseg.io import read_volume
    from napari_medseg.widgets.sections.segment import _segment_job
    from napari_medseg.widgets.sections.uncertainty import ood_text

    ct = read_volume(pydicom_files / "CT_small.dcm")
    result, table, ood = _segment_job(ct, tiny_model(0), "cpu", postprocessing=False)
    assert result.labels.shape == ct.shape and len(table)
    assert ood.flag is True and ood.flagged_by == ["modality", "hounsfield_air"]
    text = ood_text(ood)
    assert text.startswith("OOD score") and "OUT OF DISTRIBUTION" in text
    assert "hounsfield_air: 21.4% of the voxels lie below -500" in text and "modality: the scan is CT" in text
