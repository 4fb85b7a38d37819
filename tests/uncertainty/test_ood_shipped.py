"""Every shipped bundle's OOD decision on real scans: real head CTs are flagged, a brain T1
is not, each with a margin. The bundles are those found in ``resources/models`` (a new
one is tested without a change here); the CTs and MRs come from ``bench/ood_scans.py``.
"""

from __future__ import annotations


import pytest
import torch

from napari_medseg.uncertainty import assess_ood
from napari_medseg.uncertainty.ood_signals import AIR_FRACTION, expected_brain_range
from tests._paths import bench_module


def _shipped_names() -> list[str]:
    from napari_medseg.models import list_bundles

    return [info.name for info in list_bundles() if info.shipped]


SHIPPED = _shipped_names()


@pytest.fixture(scope="module")
def scans():
    return bench_module("ood_scans")


@pytest.fixture(scope="module", params=SHIPPED)
def shipped_model(request):
    from napari_medseg.models import list_bundles, load_model

    path = next(info.path for info in list_bundles() if info.shipped and info.name == request.param)
    return load_model(path, device="cpu")


def _assess(volume, model, *scans):
    """The model's OOD decision on ``volume``, as ``segment`` makes it (the locator's brain,
    when the model has one, then one network pass), assessed with ``volume`` as the scan
    and then with each of ``scans`` (the same voxels with other headers)."""
    from napari_medseg.inference import autocast_dtype
    from napari_medseg.inference.engine import predict_probabilities
    from napari_medseg.inference.locator import find_brain
    from napari_medseg.preprocess import prepare_for_model

    config = model.config
    prepared = prepare_for_model(volume, config)
    device = torch.device("cpu")
    brain, _ = find_brain(model, prepared.image, prepared.geometry, device)
    probabilities = predict_probabilities(model, prepared.image, device=device, amp=autocast_dtype(device), within=brain)
    probabilities, within = prepared.scan_part(probabilities), prepared.scan_part(brain)
    results = [assess_ood(probabilities, config, spacing=prepared.geometry.spacing, scan=scan, within=within)
               for scan in (volume, *scans)]  # fmt: skip
    return results if scans else results[0]


@pytest.mark.parametrize("ct_name", ["head_ct", "masked_head_ct"])
def test_real_head_cts_are_flagged_without_their_dicom_modality(shipped_model, scans, ct_name):
    """As NIfTI (no stated modality) a head CT is flagged by its Hounsfield air, with the
    share of air voxels at least 4 times the limit; with its DICOM header, by the modality too."""
    stated = scans.ct_volume(ct_name)
    unstated, with_header = _assess(scans.ct_volume(ct_name, keep_modality=False), shipped_model, stated)
    assert unstated.flag is True, unstated
    assert unstated.as_dict()["signals"]["hounsfield_air"]["value"] >= 4 * AIR_FRACTION, unstated
    assert "hounsfield_air" in unstated.describe()
    assert {"modality", "hounsfield_air"} <= set(with_header.flagged_by), with_header


def test_a_real_brain_mri_is_not_flagged(shipped_model, scans, shared_data):
    """The dev subject (skull-stripped, oblique, another scanner); the other MRIs of
    ``bench/ood_scans.py`` are checked by ``bench/calibrate_ood.py --check-only``."""
    (_, volume), = scans.mr_volumes(["dev_subject"])
    result = _assess(volume, shipped_model)
    assert result.flag is not True, result.describe()
    signals = result.as_dict()["signals"]
    assert signals["hounsfield_air"]["value"] == 0.0
    if result.threshold is not None:  # a margin below the calibrated threshold
        assert result.score <= 0.9 * result.threshold, result.describe()
    expected = expected_brain_range(shipped_model.config)
    if expected is not None:  # a margin inside the plausible brain volume
        _, low, high = expected
        assert low / 1.5 <= signals["brain_volume"]["value"] <= high * 1.5, result.describe()
