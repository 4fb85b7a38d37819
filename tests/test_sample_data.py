"""The shipped samples: the real adult head (the default) and the MNI152 average template,
with their geometry, as napari layer data and against their sources."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg import _sample_data
from napari_medseg.io import read_volume
from napari_medseg.resources import HEAD_SAMPLE, SAMPLE_FILES, resources_dir, sample_volume_path

LIA = ((0.0, -1.0, 0.0), (-1.0, 0.0, 0.0), (0.0, 0.0, 1.0))  # (z, y, x) rows of the head's direction
HEAD_ORIGIN = (90.47999572753906, 121.48001098632812, -84.5999984741211)
HEAD_CROP_START = (12, 44, 43)  # index of the shipped head's first voxel in the 256^3 source


def test_sample_keys_name_their_files():
    assert sample_volume_path(HEAD_SAMPLE).name == "adult_head_t1.nii.gz"
    assert sample_volume_path("mni152_template_t1").name == "mni152_t1.nii.gz"
    assert sample_volume_path() == sample_volume_path("mni152_template_t1")  # what OOD calibration reads


def test_unknown_sample_names_the_key():
    with pytest.raises(KeyError, match="'brain_t1'.*adult_head_t1, mni152_template_t1"):
        sample_volume_path("brain_t1")


def test_head_layer_has_the_file_geometry():
    ((data, kwargs, kind),) = _sample_data.make_sample_head()
    assert kind == "image" and kwargs["name"] == "Adult head T1"
    assert data.shape == (232, 172, 172) and data.dtype == np.uint8
    geometry = kwargs["metadata"]["medseg"]["geometry"]
    assert kwargs["metadata"]["medseg"]["modality"] == "MR"
    assert geometry.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(np.array(geometry.direction), np.array(LIA))
    assert geometry.origin == HEAD_ORIGIN  # float32 in the file, bit-exact through the reader
    assert geometry == read_volume(sample_volume_path(HEAD_SAMPLE)).geometry
    assert 0 < kwargs["contrast_limits"][0] < kwargs["contrast_limits"][1] <= 255


def test_template_layer_is_named_as_an_average():
    ((data, kwargs, kind),) = _sample_data.make_sample_template()
    assert kind == "image" and kwargs["name"] == "MNI152 average template T1"
    assert data.shape == (159, 189, 153)
    geometry = kwargs["metadata"]["medseg"]["geometry"]
    assert geometry.origin == (-72.0, 111.0, 76.0) and geometry.spacing == (1.0, 1.0, 1.0)


def test_head_is_the_published_scan_cropped(shared_data):
    """Every shipped voxel has the source's value at the same physical position, and the
    crop dropped only zeros."""
    source = read_volume(shared_data / "sample-head" / "t1.nii.gz")
    shipped = read_volume(sample_volume_path(HEAD_SAMPLE))
    start = np.array(HEAD_CROP_START)
    stop = start + shipped.shape
    np.testing.assert_array_equal(shipped.array, source.array[tuple(slice(a, b) for a, b in zip(start, stop))])
    assert int(shipped.array.sum(dtype=np.int64)) == int(source.array.sum(dtype=np.int64))
    corners = np.array([[0, 0, 0], [231, 171, 171], [100, 50, 120]])
    np.testing.assert_allclose(
        shipped.geometry.index_to_physical(corners), source.geometry.index_to_physical(corners + start), atol=1e-4
    )
    assert shipped.geometry.direction == source.geometry.direction


def test_notice_names_sources_and_licences():
    notice = (resources_dir() / "sample" / "NOTICE.md").read_text()
    for name in SAMPLE_FILES.values():
        assert f"`{name}`" in notice
    assert "niivue/niivue-brainchop" in notice and "public/t1_crop.nii.gz" in notice
    assert "9513725b7c2cc363916668864f09f70dd7e4ddcb" in notice
    assert "MIT License" in notice and "Permission is hereby granted, free of charge" in notice
    assert "Louis Collins" in notice
