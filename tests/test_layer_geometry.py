"""napari world coordinates equal physical coordinates, oblique directions included."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from napari_medseg._layer_geometry import geometry_from_layer, layer_transform
from napari_medseg._layers import image_layer_data, source_volume_from_state
from napari_medseg.io import read_volume


def test_napari_world_equals_sitk_physical_on_oblique_subject(shared_data):
    from napari.layers import Image

    path = shared_data / "dev-subject" / "t1.nii.gz"
    volume = read_volume(path)
    data, kwargs, _ = image_layer_data(volume)
    layer = Image(data, **kwargs)
    reference = sitk.ReadImage(str(path))
    rng = np.random.default_rng(0)
    for index in rng.integers(0, volume.shape, size=(20, 3)):
        world = np.asarray(layer.data_to_world(index))
        z, y, x = (int(v) for v in index)
        expected = np.array(reference.TransformIndexToPhysicalPoint((x, y, z)))[::-1]
        np.testing.assert_allclose(world, expected, atol=1e-6)


def test_layer_transform_inverts(shared_data):
    volume = read_volume(shared_data / "dev-subject" / "t1.nii.gz")
    transform = layer_transform(volume.geometry)
    back = geometry_from_layer(transform["scale"], transform["translate"], transform["affine"])
    np.testing.assert_allclose(back.origin, volume.geometry.origin, atol=1e-9)
    np.testing.assert_allclose(back.direction_matrix, volume.geometry.direction_matrix, atol=1e-12)
    assert back.spacing == volume.geometry.spacing


def test_layer_state_recovers_exact_geometry_and_header(shared_data):
    from napari.layers import Labels

    volume = read_volume(shared_data / "dev-subject" / "t1.nii.gz")
    data, kwargs, _ = image_layer_data(volume)
    labels = Labels(np.zeros(volume.shape, np.uint8), **{k: kwargs[k] for k in ("scale", "translate", "affine", "metadata")})
    recovered = source_volume_from_state(labels.data, labels._get_state())
    assert recovered.geometry == volume.geometry
    assert recovered.meta["nifti_fields"] == volume.meta["nifti_fields"]


def test_moved_layer_is_written_where_it_is_shown(shared_data):
    from napari.layers import Labels

    volume = read_volume(shared_data / "dev-subject" / "t1.nii.gz")
    _, kwargs, _ = image_layer_data(volume)
    labels = Labels(np.zeros(volume.shape, np.uint8), **{k: kwargs[k] for k in ("scale", "translate", "affine", "metadata")})
    labels.translate = np.asarray(labels.translate) + [5.0, 0.0, 0.0]
    recovered = source_volume_from_state(labels.data, labels._get_state())
    assert "nifti_fields" not in recovered.meta
    shift = recovered.geometry.index_to_physical([0, 0, 0]) - volume.geometry.index_to_physical([0, 0, 0])
    np.testing.assert_allclose(shift[0], volume.geometry.direction_matrix @ [5.0, 0.0, 0.0], atol=1e-9)


def test_sheared_layer_refused():
    with pytest.raises(ValueError, match="shear"):
        geometry_from_layer((1, 1, 1), (0, 0, 0), np.eye(4), np.eye(3), (0.5, 0, 0))
