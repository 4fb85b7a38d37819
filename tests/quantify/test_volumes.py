"""Per-class volumes in mL and label-map checks."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.quantify import as_labels, class_volumes_ml
from napari_medseg.types import Geometry

ANISOTROPIC = Geometry(spacing=(3.0, 0.8, 0.5), origin=(0.0, 0.0, 0.0))  # 1.2 mm^3 per voxel


def test_volumes_with_anisotropic_spacing():
    labels = np.zeros((6, 20, 30), np.uint8)
    labels[:5, :10, :10] = 1  # 500 voxels -> 0.6 mL
    labels[5, :, :] = 3  # 600 voxels -> 0.72 mL
    volumes = class_volumes_ml(labels, ANISOTROPIC, ["background", "a", "b", "c"])
    assert list(volumes) == ["a", "b", "c"]
    assert volumes["a"] == pytest.approx(0.6)
    assert volumes["b"] == 0.0
    assert volumes["c"] == pytest.approx(0.72)


def test_volumes_accept_bool_and_integral_floats():
    mask = np.zeros((4, 4, 4), bool)
    mask[:2] = True
    assert class_volumes_ml(mask, ANISOTROPIC, ["bg", "fg"]) == {"fg": pytest.approx(32 * 1.2e-3)}
    assert class_volumes_ml(mask.astype(np.float32), ANISOTROPIC, ["bg", "fg"])["fg"] == pytest.approx(0.0384)


@pytest.mark.parametrize(
    ("labels", "names", "message"),
    [
        (np.full((2, 2, 2), 3, np.uint8), ["bg", "a"], "label value 3"),
        (np.zeros((2, 2, 2), np.uint8), ["bg"], "at least one class"),
        (np.zeros((2, 2, 2), np.uint8), ["bg", "a", "a"], "unique"),
        (np.zeros((2, 2), np.uint8), ["bg", "a"], r"shape \(2, 2\)"),
        (np.full((2, 2, 2), -1, np.int16), ["bg", "a"], "negative label value -1"),
        (np.full((2, 2, 2), 0.5), ["bg", "a"], "0.5"),
    ],
)
def test_bad_labels_or_names_are_named(labels, names, message):
    with pytest.raises(ValueError, match=message):
        class_volumes_ml(labels, ANISOTROPIC, names)


def test_as_labels_does_not_copy_or_modify_integer_input():
    labels = np.arange(8, dtype=np.uint16).reshape(2, 2, 2)
    before = labels.copy()
    assert as_labels(labels) is labels
    np.testing.assert_array_equal(labels, before)


def test_asymmetry_of_paired_structures_only():
    from napari_medseg.quantify import asymmetry_indices

    volumes = {"left hippocampus": 4.0, "right hippocampus": 3.6, "left putamen": 0.0, "right putamen": 0.0,
               "CSF": 200.0, "left amygdala": 1.5}  # fmt: skip
    out = asymmetry_indices(volumes)
    assert set(out) == {"hippocampus", "putamen"}
    assert out["hippocampus"] == pytest.approx(100 * 0.4 / 3.8)
    assert np.isnan(out["putamen"])
