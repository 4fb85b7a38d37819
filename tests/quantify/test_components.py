"""Connected components: sizes, ranks, centroids in mm (oblique direction), boxes."""

from __future__ import annotations

import time

import numpy as np
import pytest

from napari_medseg.quantify import connected_components, largest_component_fraction
from napari_medseg.types import Geometry

NAMES = ["background", "lesion", "cyst"]


def _oblique_geometry() -> Geometry:
    angle = np.deg2rad(30.0)
    c, s = np.cos(angle), np.sin(angle)
    # Rotation about the first physical axis, then axes swapped: neither identity nor a permutation.
    rotation = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    direction = rotation[:, [0, 2, 1]]
    return Geometry(spacing=(2.0, 1.0, 0.5), origin=(10.0, -5.0, 3.0), direction=tuple(map(tuple, direction)))


def _synthetic() -> np.ndarray:
    labels = np.zeros((10, 12, 14), np.uint8)
    labels[6:8, 8:10, 10:12] = 1  # small lesion: 8 voxels
    labels[1:4, 1:4, 1:4] = 1  # large lesion: 27 voxels
    labels[6:8, 1:4, 1:5] = 2  # cyst: 24 voxels
    return labels


def test_component_table_on_synthetic_volume():
    geometry = _oblique_geometry()
    rows = connected_components(_synthetic(), geometry, NAMES)
    assert [(r["class"], r["class_index"], r["component"], r["voxels"]) for r in rows] == [
        ("lesion", 1, 1, 27),
        ("lesion", 1, 2, 8),
        ("cyst", 2, 1, 24),
    ]
    large, small, cyst = rows
    assert large["centroid_index_zyx"] == pytest.approx([2.0, 2.0, 2.0])
    assert small["centroid_index_zyx"] == pytest.approx([6.5, 8.5, 10.5])
    assert cyst["centroid_index_zyx"] == pytest.approx([6.5, 2.0, 2.5])
    assert large["bbox_zyx"] == [[1, 1, 1], [4, 4, 4]]
    assert small["bbox_zyx"] == [[6, 8, 10], [8, 10, 12]]
    assert cyst["bbox_zyx"] == [[6, 1, 1], [8, 4, 5]]
    voxel_ml = 2.0 * 1.0 * 0.5 / 1000
    assert large["volume_ml"] == pytest.approx(27 * voxel_ml)
    # physical = origin + direction @ (spacing * index), written out by hand.
    direction = np.asarray(geometry.direction)
    for row in rows:
        index = np.asarray(row["centroid_index_zyx"])
        expected = np.array([10.0, -5.0, 3.0]) + direction @ (np.array([2.0, 1.0, 0.5]) * index)
        assert row["centroid_mm_zyx"] == pytest.approx(expected.tolist())
    # The oblique direction matters: the centroid is not origin + spacing * index.
    assert large["centroid_mm_zyx"] != pytest.approx([14.0, -3.0, 4.0])


def test_connectivity_and_min_voxels():
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[0, 0, 0] = labels[1, 1, 1] = 1  # touch at a corner only
    labels[3, 3, 1:4] = 1
    geometry = Geometry(spacing=(1, 1, 1), origin=(0, 0, 0))
    assert [r["voxels"] for r in connected_components(labels, geometry, NAMES[:2])] == [3, 2]
    assert [r["voxels"] for r in connected_components(labels, geometry, NAMES[:2], connectivity=6)] == [3, 1, 1]
    kept = connected_components(labels, geometry, NAMES[:2], connectivity=6, min_voxels=2)
    assert [(r["component"], r["voxels"]) for r in kept] == [(1, 3)]
    with pytest.raises(ValueError, match="connectivity 8"):
        connected_components(labels, geometry, NAMES[:2], connectivity=8)
    with pytest.raises(ValueError, match="min_voxels 0"):
        connected_components(labels, geometry, NAMES[:2], min_voxels=0)


def test_empty_labels_give_no_components():
    geometry = Geometry(spacing=(1, 1, 1), origin=(0, 0, 0))
    assert connected_components(np.zeros((3, 3, 3), np.uint8), geometry, NAMES) == []


def test_largest_component_fraction():
    labels = _synthetic()
    assert largest_component_fraction(labels == 1) == pytest.approx(27 / 35)
    assert largest_component_fraction(labels == 2) == 1.0
    assert np.isnan(largest_component_fraction(np.zeros((3, 3, 3), bool)))


def test_components_on_a_256_cube_are_fast():
    rng = np.random.default_rng(0)
    labels = np.zeros((256, 256, 256), np.uint8)
    labels[20:200, 30:220, 40:230] = 1
    for z, y, x in rng.integers(0, 250, size=(200, 3)):
        labels[z : z + 4, y : y + 4, x : x + 4] = 2
    geometry = Geometry(spacing=(1.0, 0.9, 0.9), origin=(0, 0, 0))
    start = time.perf_counter()
    rows = connected_components(labels, geometry, NAMES)
    elapsed = time.perf_counter() - start
    assert sum(r["voxels"] for r in rows) == np.count_nonzero(labels)
    assert elapsed < 8.0, f"{elapsed:.1f} s for a 256^3 volume"


def test_components_agree_with_scipy_across_slabs():
    """Sizes, centroids and boxes, gathered slab by slab, are scipy's whole-volume ones."""
    from scipy import ndimage

    rng = np.random.default_rng(7)
    labels = ndimage.median_filter(rng.integers(0, 3, size=(45, 23, 19)), size=3).astype(np.uint8)
    geometry = Geometry((1.2, 0.9, 0.8), (3.0, -2.0, 5.0))
    rows = connected_components(labels, geometry, ["background", "a", "b"])
    for k in (1, 2):
        components, count = ndimage.label(labels == k, structure=np.ones((3, 3, 3), bool))
        ours = sorted((r for r in rows if r["class_index"] == k), key=lambda r: r["bbox_zyx"])
        assert len(ours) == count
        index = np.arange(1, count + 1)
        sizes = ndimage.sum_labels(np.ones_like(components), components, index)
        centroids = ndimage.center_of_mass(np.ones_like(components), components, index)
        boxes = ndimage.find_objects(components)
        theirs = sorted(
            ([[s.start for s in box], [s.stop for s in box]], int(size), centroid)
            for box, size, centroid in zip(boxes, sizes, centroids)
        )
        for row, (box, size, centroid) in zip(ours, theirs):
            assert row["bbox_zyx"] == box and row["voxels"] == size
            np.testing.assert_allclose(row["centroid_index_zyx"], centroid, rtol=1e-12)


def test_a_class_in_more_than_65535_pieces_is_still_counted():
    labels = np.zeros((2, 600, 600), np.uint8)
    labels[0, ::2, ::2] = 1  # 90,000 single voxels: more pieces than uint16 labels hold
    rows = connected_components(labels, Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0)), ["background", "dots"])
    assert len(rows) == 90_000 and {r["voxels"] for r in rows} == {1}
