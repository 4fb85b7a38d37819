"""Dice, HD95 and volume difference: hand-computed cases, empty classes, a brute-force check."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from napari_medseg.quantify import dice, evaluate, hd95, volume_difference_ml
from napari_medseg.types import Geometry

SPACING = (2.0, 0.8, 0.5)  # (z, y, x) mm


def _offset_bars(axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Two 2x2x4 bars along ``axis``, the second shifted by 2 voxels along it.

    Every voxel of a bar two voxels thick is on its surface. Along the axis the reference
    covers 2..5 and the prediction 4..7: half overlaps (Dice 0.5); per side 8 distances
    are 0, 4 are one voxel and 4 are two voxels, so the pooled 95th percentile is two
    voxels along ``axis``: 2 * spacing[axis].
    """
    ref = np.zeros((10, 10, 10), np.uint8)
    pred = np.zeros_like(ref)
    box = [slice(3, 5)] * 3
    box[axis] = slice(2, 6)
    ref[tuple(box)] = 1
    box[axis] = slice(4, 8)
    pred[tuple(box)] = 1
    return pred, ref


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_offset_bars_by_hand(axis):
    pred, ref = _offset_bars(axis)
    assert dice(pred, ref, 1) == 0.5
    assert hd95(pred, ref, 1, SPACING) == pytest.approx(2 * SPACING[axis])
    assert volume_difference_ml(pred, ref, 1, SPACING) == 0.0


def test_offset_cubes_without_overlap():
    # Two 2x2x2 cubes, 2 voxels apart along x (0.5 mm): distances 1 and 2 voxels, half each.
    ref = np.zeros((6, 6, 8), np.uint8)
    pred = np.zeros_like(ref)
    ref[2:4, 2:4, 2:4] = 1
    pred[2:4, 2:4, 4:6] = 1
    assert dice(pred, ref, 1) == 0.0
    assert hd95(pred, ref, 1, SPACING) == pytest.approx(1.0)


def test_identical_masks():
    labels = np.zeros((8, 9, 10), np.uint8)
    labels[1:7, 2:8, 3:9] = 2
    assert dice(labels, labels, 2) == 1.0
    assert hd95(labels, labels, 2, SPACING) == 0.0


def test_empty_classes():
    empty = np.zeros((4, 4, 4), np.uint8)
    full = empty.copy()
    full[1:3, 1:3, 1:3] = 1
    assert math.isnan(dice(empty, empty, 1))
    assert math.isnan(hd95(empty, empty, 1, SPACING))
    assert dice(full, empty, 1) == 0.0 and dice(empty, full, 1) == 0.0
    assert hd95(full, empty, 1, SPACING) == math.inf
    assert hd95(empty, full, 1, SPACING) == math.inf


def _brute_force_hd95(pred: np.ndarray, ref: np.ndarray, spacing) -> float:
    def surface_points(mask):
        surface = mask & ~ndimage.binary_erosion(mask, ndimage.generate_binary_structure(3, 1))
        return np.argwhere(surface) * np.asarray(spacing)

    distances = cdist(surface_points(pred), surface_points(ref))
    return float(np.percentile(np.concatenate([distances.min(axis=1), distances.min(axis=0)]), 95))


def test_hd95_matches_brute_force_on_blobs_touching_the_edge():
    rng = np.random.default_rng(1)
    shape = (12, 16, 20)
    for _ in range(3):
        ref = ndimage.gaussian_filter(rng.random(shape), 2) > 0.5
        pred = ndimage.gaussian_filter(rng.random(shape), 2) > 0.5
        expected = _brute_force_hd95(pred, ref, SPACING)
        assert hd95(pred.astype(np.uint8), ref.astype(np.uint8), 1, SPACING) == pytest.approx(expected)


def test_evaluate_per_class():
    geometry = Geometry(spacing=SPACING, origin=(1.0, 2.0, 3.0))
    pred, ref = _offset_bars(2)
    pred[0, 0, 0] = 2  # class 2 only predicted; class 3 absent from both
    result = evaluate(pred, ref, geometry, ["background", "bar", "speck", "absent"])
    bar, speck, absent = (result["classes"][name] for name in ("bar", "speck", "absent"))
    assert bar["index"] == 1 and bar["dice"] == 0.5
    assert bar["hd95_mm"] == pytest.approx(1.0)
    voxel_ml = 0.8e-3
    assert bar["volume_pred_ml"] == pytest.approx(16 * voxel_ml)
    assert bar["volume_ref_ml"] == pytest.approx(16 * voxel_ml)
    assert bar["volume_diff_ml"] == 0.0
    assert speck["dice"] == 0.0 and speck["hd95_mm"] == math.inf
    assert speck["volume_diff_ml"] == pytest.approx(voxel_ml)
    assert (speck["present_pred"], speck["present_ref"]) == (True, False)
    assert math.isnan(absent["dice"]) and math.isnan(absent["hd95_mm"])
    assert result["mean_dice"] == pytest.approx(0.25)
    assert result["mean_dice_classes"] == ["bar", "speck"]


def test_evaluate_crops_exactly_away_from_the_edge():
    # Objects far from the array's edge: the cropped computation must match the full one.
    rng = np.random.default_rng(2)
    pred = np.zeros((20, 24, 28), np.uint8)
    ref = np.zeros_like(pred)
    pred[5:15, 6:18, 7:21] = (ndimage.gaussian_filter(rng.random((10, 12, 14)), 1.5) > 0.5) * 1
    ref[5:15, 6:18, 7:21] = (ndimage.gaussian_filter(rng.random((10, 12, 14)), 1.5) > 0.5) * 1
    geometry = Geometry(spacing=SPACING, origin=(0, 0, 0))
    result = evaluate(pred, ref, geometry, ["background", "x"])
    assert result["classes"]["x"]["hd95_mm"] == pytest.approx(_brute_force_hd95(pred == 1, ref == 1, SPACING))


def test_shape_mismatch_and_bad_spacing_are_named():
    a, b = np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 5), np.uint8)
    with pytest.raises(ValueError, match=r"\(4, 4, 4\).*\(4, 4, 5\)"):
        dice(a, b, 1)
    with pytest.raises(ValueError, match=r"\(4, 4, 4\).*\(4, 4, 5\)"):
        evaluate(a, b, Geometry(spacing=(1, 1, 1), origin=(0, 0, 0)), ["bg", "x"])
    with pytest.raises(ValueError, match=r"spacing \(1.0, -1.0, 1.0\)"):
        hd95(a, a, 1, (1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="label value 2"):
        evaluate(a + 2, a, Geometry(spacing=(1, 1, 1), origin=(0, 0, 0)), ["bg", "x"])


def test_inputs_are_not_modified():
    pred, ref = _offset_bars(1)
    before = pred.copy(), ref.copy()
    evaluate(pred, ref, Geometry(spacing=SPACING, origin=(0, 0, 0)), ["bg", "bar"])
    np.testing.assert_array_equal(pred, before[0])
    np.testing.assert_array_equal(ref, before[1])
