"""Warnings about a scan and about giving it to a model (modality, spacing, intensities)."""

from __future__ import annotations

import dataclasses

import numpy as np

from napari_medseg.io.scan_checks import sanity_warnings
from napari_medseg.models.applicability import model_warnings
from napari_medseg.io import read_volume
from napari_medseg.types import Geometry, Volume
from tests.tiny_models import tiny_config

MR_MODEL = dataclasses.replace(tiny_config(), modality="MR", target_spacing=(1.0, 1.0, 1.0))


def _volume(array, spacing=(1.0, 1.0, 1.0), modality=""):
    return Volume(np.asarray(array, np.float32), Geometry(spacing, (0.0, 0.0, 0.0), np.eye(3)), modality=modality)


def test_real_ct_given_to_an_mr_model_is_named(pydicom_files):
    ct = read_volume(pydicom_files / "CT_small.dcm")
    assert ct.modality == "CT"
    notes = model_warnings(ct, MR_MODEL)
    assert any("modality is CT" in note and "trained on MR" in note for note in notes)


def test_ct_like_intensities_without_a_stated_modality_are_named():
    array = np.full((10, 20, 20), -1000.0)
    array[:, 5:15, 5:15] = 40.0
    array[:, 8:12, 8:12] = 700.0
    notes = model_warnings(_volume(array), MR_MODEL)
    assert any("look like CT" in note and "-1000" in note for note in notes)


def test_thick_slices_and_negative_mr_are_named():
    rng = np.random.default_rng(0)
    thick = model_warnings(_volume(rng.random((10, 20, 20)) + 1, spacing=(5.0, 1.0, 1.0), modality="MR"), MR_MODEL)
    assert any("5.0x coarser" in note for note in thick)
    negative = model_warnings(_volume(rng.normal(0, 1, (10, 20, 20)) - 0.5), MR_MODEL)
    assert any("negative" in note for note in negative)


def test_a_matching_scan_gets_no_model_warning(shared_data):
    t1 = read_volume(shared_data / "dev-subject" / "t1.nii.gz")
    assert model_warnings(t1, MR_MODEL) == []
    assert not any("anisotropic" in note for note in sanity_warnings(t1))
