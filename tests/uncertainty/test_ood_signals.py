"""The named tests of the OOD decision: stated modality, Hounsfield air, brain volume."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from napari_medseg.uncertainty.ood import assess_ood, ood_calibration
from napari_medseg.uncertainty.ood_signals import (
    AIR_FRACTION,
    VOLUME_FACTOR,
    air_fraction,
    brain_volume_signal,
    decide,
    expected_brain_range,
    hounsfield_air_signal,
    modality_signal,
)
from napari_medseg.types import Geometry, Volume
from tests._paths import bench_module
from tests.tiny_models import tiny_config

RANGES = {"CSF": [270.0, 630.0], "grey matter": [435.0, 798.0], "white matter": [362.0, 616.0]}


@pytest.fixture(scope="module")
def scans():
    return bench_module("ood_scans")


@pytest.mark.parametrize("name", ["head_ct", "masked_head_ct", "abdomen_ct", "neck_ct"])
def test_every_real_ct_has_air_far_above_the_limit(scans, name):
    ct = scans.ct_volume(name)
    fraction = air_fraction(ct.array)
    assert fraction >= 4 * AIR_FRACTION, (name, fraction)
    signal = hounsfield_air_signal(ct.array, "MR")
    assert signal.flag is True and signal.value == pytest.approx(fraction, abs=1e-6)
    assert "below -500" in signal.detail
    assert hounsfield_air_signal(ct.array, "CT").flag is None  # tested for MR models only


def test_real_mr_scans_have_no_air_in_hounsfield_units(scans, pydicom_files):
    from napari_medseg.io import read_volume

    volumes = dict(scans.mr_volumes(["dev_subject", "mni_sample"]))
    volumes["mr_small_dicom"] = read_volume(pydicom_files / "MR_small.dcm")
    for name, volume in volumes.items():
        assert air_fraction(volume.array) == 0.0, name
        assert hounsfield_air_signal(volume.array, "MR").flag is False, name


def test_air_fraction_counts_by_slabs_exactly_and_ignores_nan(monkeypatch):
    import napari_medseg.uncertainty.ood_signals as signals

    array = np.zeros((7, 5, 4), np.float32)
    array[2, :3] = -1000
    array[5, 0, 0] = np.nan
    monkeypatch.setattr(signals, "_SLAB_VOXELS", 20)  # one slice per slab
    assert air_fraction(array) == pytest.approx(12 / 140)
    assert air_fraction(np.zeros((0, 3, 3))) == 0.0


@pytest.mark.parametrize(
    ("stated", "expected", "flag"),
    [("CT", "MR", True), ("ct", "MR", True), ("PT", "MR", True), ("MR", "MR", False), ("mr", "MR", False),
     ("", "MR", None), ("unknown", "MR", None), ("OT", "MR", None), ("CT", "", None)],
)  # fmt: skip
def test_stated_modality_against_the_bundles(stated, expected, flag):
    signal = modality_signal(stated, expected)
    assert signal.flag is flag
    if flag:
        assert signal.value == stated.upper() and "trained on MR" in signal.detail


def test_brain_volume_range_is_the_summed_training_range_widened():
    config = dataclasses.replace(tiny_config(), extra={"expected_volume_ml": RANGES})
    names, low, high = expected_brain_range(config)
    assert names == ("CSF", "grey matter", "white matter")
    assert (low, high) == pytest.approx((1067.0, 2044.0))
    inside = brain_volume_signal({"CSF": 300.0, "grey matter": 600.0, "white matter": 500.0}, config)
    assert inside.flag is False and inside.value == pytest.approx(1400.0)
    edge = low / VOLUME_FACTOR
    assert brain_volume_signal({"grey matter": edge + 1}, config).flag is False
    small = brain_volume_signal({"grey matter": edge - 1}, config)
    assert small.flag is True and "outside" in small.detail
    assert brain_volume_signal({"white matter": high * VOLUME_FACTOR + 1}, config).flag is True
    assert brain_volume_signal({"CSF": 1.0}, tiny_config()).flag is None  # no ranges in the bundle
    bad = dataclasses.replace(config, extra={"expected_volume_ml": {"CSF": [500.0, 100.0]}})
    with pytest.raises(ValueError, match=r"\(500.0, 100.0\)"):
        expected_brain_range(bad)


def test_the_decision_is_any_test_that_ran():
    from napari_medseg.uncertainty.ood_signals import OODSignal

    def signal(flag):
        return OODSignal("score", 0.0, "", flag, "")

    assert decide([signal(None), signal(None)]) is None
    assert decide([signal(None), signal(False)]) is False
    assert decide([signal(False), signal(True), signal(None)]) is True


def _probabilities(foreground_p: float, shape=(4, 6, 5)) -> np.ndarray:
    p = np.zeros((4, *shape), dtype=np.float32)
    p[0] = 1.0
    p[:, : shape[0] // 2] = 0.0
    p[2, : shape[0] // 2] = foreground_p
    p[0, : shape[0] // 2] = p[1, : shape[0] // 2] = p[3, : shape[0] // 2] = (1 - foreground_p) / 3
    return p


def test_assessment_names_each_test_with_its_value(scans):
    ct = scans.ct_volume("neck_ct")
    entry = ood_calibration([0.1, 0.12, 0.11])
    config = dataclasses.replace(tiny_config(), extra={"ood": entry, "expected_volume_ml": RANGES})
    p = _probabilities(0.99)  # confident: the score alone would not flag it
    result = assess_ood(p, config, spacing=(1.0, 1.0, 1.0), scan=ct)
    assert result.flag is True
    assert result.flagged_by == ["modality", "hounsfield_air", "brain_volume"]
    data = result.as_dict()
    assert data["flagged_by"] == result.flagged_by and data["flag"] is True
    assert set(data["signals"]) == {"score", "modality", "hounsfield_air", "brain_volume"}
    assert data["signals"]["score"]["flag"] is False
    assert data["signals"]["hounsfield_air"]["value"] == pytest.approx(air_fraction(ct.array), abs=1e-6)
    assert data["signals"]["brain_volume"]["value"] == pytest.approx(60 / 1000)  # 60 voxels of 1 mm^3
    assert "hounsfield_air:" in result.describe() and "score:" not in result.describe()
    # The same CT as NIfTI (no stated modality): its intensities still flag it.
    unstated = Volume(ct.array, ct.geometry, modality="unknown")
    again = assess_ood(p, config, spacing=(1.0, 1.0, 1.0), scan=unstated)
    assert "hounsfield_air" in again.flagged_by and "modality" not in again.flagged_by


def test_without_a_scan_or_calibration_nothing_runs_and_an_mr_passes():
    result = assess_ood(_probabilities(0.9), tiny_config(), spacing=(1.0, 1.0, 1.0))
    assert result.flag is None and result.flagged_by == [] and result.describe() == "no test could run"
    mr = Volume(np.full((4, 6, 5), 300, np.int16), Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0)), modality="MR")
    passed = assess_ood(_probabilities(0.9), tiny_config(), spacing=(1.0, 1.0, 1.0), scan=mr)
    assert passed.flag is False and passed.as_dict()["signals"]["modality"]["flag"] is False
