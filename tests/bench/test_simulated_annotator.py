"""The simulated annotator of the correction-loop benchmark on small synthetic volumes."""

from __future__ import annotations


import numpy as np
import pytest

from tests._paths import bench_module


@pytest.fixture(scope="module")
def loop():
    return bench_module("simulated_annotator")


def _layers(shape=(12, 40, 48)) -> np.ndarray:
    """Reference labels: background border, then CSF, GM and WM slabs along x."""
    reference = np.zeros(shape, np.uint8)
    reference[1:-1, 2:-2, 2:14] = 1
    reference[1:-1, 2:-2, 14:28] = 2
    reference[1:-1, 2:-2, 28:-2] = 3
    return reference


def test_ridge_path_is_a_connected_line_inside_the_region(loop):
    region = np.zeros((30, 60), bool)
    region[10:17, 5:55] = True  # a long horizontal band
    path = loop.ridge_path(region, 25)
    assert len(path) == 25 and len(set(path)) == 25
    assert all(region[p] for p in path)
    steps = np.abs(np.diff(np.array(path), axis=0))
    assert steps.max() <= 1  # 8-connected, in drawing order
    ys, xs = zip(*path)
    assert set(ys) == {13} and max(xs) - min(xs) == 24  # along the band's middle
    assert loop.ridge_path(region[:1, :1] | True, 10) == [(0, 0)]


def test_strokes_stay_in_the_reference_class_and_within_budget(loop):
    reference = _layers()
    prediction = reference.copy()
    prediction[3:9, 10:30, 14:24] = 3  # a large GM region called WM
    prediction[5:7, 10:14, 30:36] = 2  # a small WM region called GM
    sparse = np.zeros_like(reference)
    sparse[0, 0, 0] = 1  # an earlier annotation (background) is kept
    before = sparse.copy()
    out, records = loop.draw_strokes(prediction, reference, sparse, budget=150, regions=2, length=12, radius=1)
    np.testing.assert_array_equal(sparse, before)  # input not modified
    assert out[0, 0, 0] == 1
    new = (out > 0) & (before == 0)
    assert 0 < new.sum() <= 150 and sum(r["voxels"] for r in records) == new.sum()
    assert np.all(out[new] == reference[new] + 1)  # labelled with the reference class
    gm = out == 3
    assert gm.sum() and (prediction[gm] == 3).mean() > 0.8  # mostly inside the GM error region
    assert {r["class"] for r in records} == {"grey matter", "white matter"}  # regions take turns
    assert len({r["slice"] for r in records if r["class"] == "grey matter"}) > 1  # spread over slices


def test_no_strokes_without_errors_or_budget(loop):
    reference = _layers()
    sparse = np.zeros_like(reference)
    out, records = loop.draw_strokes(reference, reference, sparse, budget=100)
    assert records == [] and not out.any()
    prediction = np.where(reference == 2, 3, reference).astype(np.uint8)
    out, records = loop.draw_strokes(prediction, reference, sparse, budget=0)
    assert records == [] and not out.any()


def test_lateral_ventricles_are_the_inner_csf_cavities(loop):
    reference = np.zeros((40, 40, 40), np.uint8)
    reference[2:-2, 2:-2, 2:-2] = 1  # outer CSF shell
    reference[4:-4, 4:-4, 4:-4] = 3  # brain tissue
    cavities = np.zeros(reference.shape, bool)
    cavities[14:26, 13:27, 11:19] = True  # left
    cavities[14:26, 13:27, 21:29] = True  # right
    reference[cavities] = 1
    reference[6:9, 6:9, 6:9] = 1  # a small cavity outside the central box
    mask, description = loop.lateral_ventricles(reference)
    np.testing.assert_array_equal(mask, cavities)
    assert description["component_voxels"] == [12 * 14 * 8] * 2


def test_new_class_strokes_paint_the_structure_and_what_surrounds_it(loop):
    reference = np.zeros((6, 40, 40), np.uint8)
    reference[:, 2:-2, 2:-2] = 1  # CSF
    reference[:, 5:-5, 5:-5] = 2  # GM
    reference[:, 9:-9, 9:-9] = 3  # WM
    structure = np.zeros(reference.shape, bool)
    structure[:, 16:24, 14:26] = True  # a cavity inside the WM
    reference[structure] = 1
    sparse = loop.new_class_strokes(reference, structure, [2, 4], ring=9, length=10)
    assert not sparse[[0, 1, 3, 5]].any()  # only the chosen slices
    assert np.all(structure[sparse == 5]) and (sparse == 5).any()  # the new class, inside it
    for value in (2, 3, 4):  # CSF, GM, WM strokes where the reference says so
        painted = sparse == value
        assert painted.any() and np.all(reference[painted] == value - 1)
    assert not np.any(structure & (sparse != 5) & (sparse > 0))
