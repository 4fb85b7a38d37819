"""Grad-CAM regions drawn over a scan whose axes are permuted against the world come back in
the scan's own voxel order, where they were drawn."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.contributions.layers import from_layer_layout, image_layer_data
from napari_medseg.io.sitk_images import image_from_array
from napari_medseg.types import Geometry, Volume
from napari_medseg.widgets.sections.explain import region_mask

# A sagittal acquisition: the file's first axis runs left-right, its last head-foot.
SAGITTAL = Geometry((1.2, 0.9, 1.1), (30.0, -20.0, 10.0), ((0, 0, -1), (0, -1, 0), (1, 0, 0)))


@pytest.fixture
def image():
    from napari.layers import Image

    volume = Volume(np.random.default_rng(0).random((10, 12, 14)).astype(np.float32), SAGITTAL)
    data, kwargs, _ = image_layer_data(volume)
    layer = Image(data, **kwargs)
    assert layer.data.shape != volume.shape  # shown in the world's axis order
    return volume, layer


def test_a_rectangle_drawn_in_world_coordinates_lands_where_it_was_drawn(image):
    from napari.layers import Shapes

    volume, layer = image
    corners_shown = np.array([[3, 2, 4], [3, 2, 9], [3, 6, 9], [3, 6, 4]], float)  # one displayed slice
    corners_world = np.array([layer.data_to_world(c) for c in corners_shown])
    drawn = Shapes([corners_world], shape_type="polygon", ndim=3)  # a user's layer: world = its data
    mask = region_mask(drawn, layer)
    assert mask.shape == volume.shape and mask.any()
    expected = Shapes([corners_shown], shape_type="polygon", ndim=3).to_labels(labels_shape=layer.data.shape) > 0
    np.testing.assert_array_equal(mask, from_layer_layout(expected, layer.metadata))
    # Independently of napari: every voxel of the mask lies in the rectangle's world plane and bounds.
    reference = image_from_array(volume.array, volume.geometry)
    world = np.array([reference.TransformIndexToPhysicalPoint(tuple(int(i) for i in index[::-1]))[::-1]
                      for index in np.argwhere(mask)])  # fmt: skip
    np.testing.assert_allclose(world[:, 0], corners_world[0, 0], atol=1e-6)
    low, high = corners_world.min(axis=0), corners_world.max(axis=0)
    assert np.all(world[:, 1:] >= low[1:] - 1e-6) and np.all(world[:, 1:] <= high[1:] + 1e-6)


def test_a_labels_layer_painted_over_the_image_is_read_in_its_layout(image):
    from napari.layers import Labels

    volume, layer = image
    painted = np.zeros(layer.data.shape, np.uint8)
    painted[2:5, 3:7, 1:4] = 1
    mask = region_mask(Labels(painted, name="region"), layer)
    assert mask.shape == volume.shape and mask.sum() == painted.sum()
    np.testing.assert_array_equal(mask, from_layer_layout(painted > 0, layer.metadata))


def test_a_region_on_another_grid_is_refused_by_name(image):
    from napari.layers import Labels

    _, layer = image
    with pytest.raises(ValueError, match=r"region layer 'elsewhere' of shape \(3, 3, 3\) does not match the image"):
        region_mask(Labels(np.ones((3, 3, 3), np.uint8), name="elsewhere"), layer)
