"""The shipped brain model's OOD warning on real scans: a CT is flagged, brain T1s are not.

Skipped until the shipped bundle carries a calibrated threshold (``bench/calibrate_ood.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medseg.uncertainty import assess_ood, ood_threshold

MODEL = "brain-tissue-unet"


@pytest.fixture(scope="module")
def shipped_model():
    from napari_medseg.models import list_bundles, load_model

    paths = [info.path for info in list_bundles() if info.shipped and info.name == MODEL]
    if not paths:
        pytest.skip(f"shipped bundle {MODEL} not present")
    model = load_model(paths[0])
    if ood_threshold(model.config) is None:
        pytest.skip(f"{MODEL} has no calibrated OOD threshold yet")
    return model


def _assess(volume, model):
    from napari_medseg.inference import autocast_dtype
    from napari_medseg.inference.engine import predict_probabilities
    from napari_medseg.preprocess import prepare_for_model

    config = model.config
    prepared = prepare_for_model(volume, config)
    device = torch.device("cpu")
    probabilities = predict_probabilities(model, prepared.image, device=device, amp=autocast_dtype(device))
    return assess_ood(prepared.scan_part(probabilities), config, spacing=prepared.geometry.spacing)


def _ct_volume(pydicom_data_files):
    """The real enhanced CT (2 frames 10 mm apart, Hounsfield units), frames repeated to 1 mm."""
    from napari_medseg.io import read_volume
    from napari_medseg.types import Geometry, Volume

    ct = read_volume(pydicom_data_files / "eCT_Supplemental.dcm")
    assert ct.modality == "CT"
    repeat = int(round(ct.spacing[0]))
    geometry = Geometry((ct.spacing[0] / repeat, *ct.spacing[1:]), ct.geometry.origin, ct.geometry.direction)
    return Volume(np.repeat(ct.array.astype(np.float32), repeat, axis=0), geometry, modality="CT")


def test_ct_is_flagged_and_the_sample_volume_is_not(shipped_model, pydicom_data_files):
    from napari_medseg.io import read_volume
    from napari_medseg.resources import sample_volume_path

    ct = _assess(_ct_volume(pydicom_data_files), shipped_model)
    assert ct.flag is True, ct
    sample = _assess(read_volume(sample_volume_path()), shipped_model)
    assert sample.flag is False, sample
    assert ct.score > sample.score


def test_dev_subject_is_not_flagged(shipped_model, shared_data):
    from napari_medseg.io import read_volume

    result = _assess(read_volume(shared_data / "dev-subject" / "t1.nii.gz"), shipped_model)
    assert result.flag is False, result
