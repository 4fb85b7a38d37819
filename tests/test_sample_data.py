"""The shipped samples: the real adult head (the default) and the MNI152 average template,
with their geometry, as napari layer data and against their sources."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg import _sample_data
from napari_medseg.io import read_volume
from napari_medseg.resources import HEAD_SAMPLE, SAMPLE_FILES, resources_dir, sample_volume_path

RAS = ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0))  # (z, y, x) rows of the shipped head's direction
HEAD_ORIGIN = (-80.52000427246094, 121.48001098632812, 86.4000015258789)


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
    assert data.shape == (172, 232, 172) and data.dtype == np.uint8
    geometry = kwargs["metadata"]["medseg"]["geometry"]
    assert kwargs["metadata"]["medseg"]["modality"] == "MR"
    assert geometry.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(np.array(geometry.direction), np.array(RAS))
    assert geometry.origin == HEAD_ORIGIN  # float32 in the file, bit-exact through the reader
    assert geometry == read_volume(sample_volume_path(HEAD_SAMPLE)).geometry
    assert 0 < kwargs["contrast_limits"][0] < kwargs["contrast_limits"][1] <= 255


def test_template_layer_is_named_as_an_average():
    ((data, kwargs, kind),) = _sample_data.make_sample_template()
    assert kind == "image" and kwargs["name"] == "MNI152 average template T1"
    assert data.shape == (159, 189, 153)
    geometry = kwargs["metadata"]["medseg"]["geometry"]
    assert geometry.origin == (-72.0, 111.0, 76.0) and geometry.spacing == (1.0, 1.0, 1.0)


def test_head_is_the_published_scan_reordered_and_cropped(shared_data):
    """The source's LIA voxel order becomes RAS by an exact permutation and flip: every
    shipped voxel has the source's value at the same physical position, and the crop
    dropped only zeros."""
    source = read_volume(shared_data / "sample-head" / "t1.nii.gz")
    shipped = read_volume(sample_volume_path(HEAD_SAMPLE))
    index = np.indices(shipped.shape).reshape(3, -1).T
    in_source = source.geometry.physical_to_index(shipped.geometry.index_to_physical(index))
    rounded = np.rint(in_source).astype(int)
    assert np.abs(in_source - rounded).max() < 1e-3
    np.testing.assert_array_equal(shipped.array.reshape(-1), source.array[tuple(rounded.T)])
    assert int(shipped.array.sum(dtype=np.int64)) == int(source.array.sum(dtype=np.int64))


def test_notice_names_sources_and_licences():
    notice = (resources_dir() / "sample" / "NOTICE.md").read_text()
    for name in SAMPLE_FILES.values():
        assert f"`{name}`" in notice
    assert "niivue/niivue-brainchop" in notice and "public/t1_crop.nii.gz" in notice
    assert "9513725b7c2cc363916668864f09f70dd7e4ddcb" in notice
    assert "MIT License" in notice and "Permission is hereby granted, free of charge" in notice
    assert "Louis Collins" in notice
