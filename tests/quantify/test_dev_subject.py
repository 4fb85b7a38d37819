"""Quantification on the real dev-subject tissue labels."""

from __future__ import annotations

import pytest

from napari_medseg.io import read_volume
from napari_medseg.quantify import class_volumes_ml, evaluate


@pytest.fixture(scope="module")
def tissue(shared_data):
    return read_volume(shared_data / "dev-subject" / "tissue_labels.nii.gz")


def test_tissue_labels_against_themselves(tissue):
    labels = tissue.array
    names = ["background", *(f"tissue_{k}" for k in range(1, int(labels.max()) + 1))]
    result = evaluate(labels, labels, tissue.geometry, names)
    assert result["mean_dice"] == 1.0
    for name, row in result["classes"].items():
        assert row["dice"] == 1.0, name
        assert row["hd95_mm"] == 0.0, name
        assert row["volume_diff_ml"] == 0.0, name

    volumes = class_volumes_ml(labels, tissue.geometry, names)
    assert len(volumes) >= 2
    for name, ml in volumes.items():
        assert 50.0 < ml < 1500.0, f"{name}: {ml:.1f} mL"
