"""Writing keeps geometry bit-exactly, picks the right dtype, and is atomic."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from napari_medseg.io import VolumeWriteError, read_volume, write_volume
from napari_medseg.types import Geometry, Volume

FORMATS = [".nii.gz", ".nii", ".nrrd", ".mha"]


def _oblique_anisotropic() -> Geometry:
    angle = 0.3
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    permutation = np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0]])
    return Geometry((3.3, 0.71, 0.9), (-12.345678901, 33.3, 1e-3), rotation @ permutation)


@pytest.mark.parametrize("suffix", FORMATS)
def test_oblique_anisotropic_geometry_round_trips_bit_exactly(tmp_path, suffix):
    geometry = _oblique_anisotropic()
    image = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32) * 100
    labels = (image > 50).astype(np.uint8) * 3
    for array in (image, labels):
        path = write_volume(tmp_path / f"out{suffix}", array, geometry)
        back = read_volume(path)
        assert back.geometry == geometry  # exact equality of every double
        np.testing.assert_array_equal(back.array, array)
        assert back.array.dtype == (np.float32 if array is image else np.uint8)
        # a second generation written from what was read is still exact
        again = read_volume(write_volume(tmp_path / f"again{suffix}", back.array, back))
        assert again.geometry == geometry


@pytest.mark.parametrize("suffix", FORMATS)
def test_dev_subject_geometry_survives_every_format(tmp_path, shared_data, suffix):
    source = read_volume(shared_data / "dev-subject" / "t1.nii.gz")
    mask = (source.array > 60).astype(np.uint8)
    back = read_volume(write_volume(tmp_path / f"mask{suffix}", mask, source))
    assert back.geometry == source.geometry
    np.testing.assert_array_equal(back.array, mask)


def test_nifti_output_copies_source_header_for_other_tools(tmp_path, shared_data):
    """SimpleITK (standing in for any NIfTI reader) sees the source's geometry in our file."""
    path = shared_data / "dev-subject" / "t1.nii.gz"
    source = read_volume(path)
    out = write_volume(tmp_path / "seg.nii.gz", np.zeros(source.shape, np.uint8), source)
    a, b = sitk.ReadImage(str(path)), sitk.ReadImage(str(out))
    assert (a.GetSpacing(), a.GetOrigin(), a.GetDirection()) == (b.GetSpacing(), b.GetOrigin(), b.GetDirection())


def test_multichannel_probabilities_round_trip(tmp_path):
    geometry = _oblique_anisotropic()
    probabilities = np.random.default_rng(1).random((5, 6, 7, 4)).astype(np.float32)
    for suffix in FORMATS:
        back = read_volume(write_volume(tmp_path / f"prob{suffix}", probabilities, geometry), keep_channels=True)
        np.testing.assert_array_equal(back.array, probabilities)
        assert back.geometry == geometry


def test_nifti_vector_layout_readable_by_nibabel(tmp_path):
    import nibabel

    probabilities = np.random.default_rng(2).random((3, 4, 5, 2)).astype(np.float32)
    path = write_volume(tmp_path / "prob.nii.gz", probabilities, _oblique_anisotropic())
    image = nibabel.load(path)
    assert image.shape == (5, 4, 3, 1, 2)
    data = np.asarray(image.dataobj)
    np.testing.assert_array_equal(data[..., 0, 1].transpose(2, 1, 0), probabilities[..., 1])


@pytest.mark.parametrize(
    ("array", "dtype"),
    [
        (np.array([0, 1, 255], dtype=np.int64), np.uint8),
        (np.array([0, 1, 256], dtype=np.int32), np.uint16),
        (np.array([True, False]), np.uint8),
        (np.array([0.5, 2.0], dtype=np.float64), np.float32),
    ],
)
def test_output_dtypes(tmp_path, array, dtype):
    data = np.resize(array, (2, 2, 3))
    back = read_volume(write_volume(tmp_path / "x.nrrd", data, Geometry((1, 1, 1), (0, 0, 0))))
    assert back.array.dtype == dtype


def test_labels_out_of_range_are_refused(tmp_path):
    with pytest.raises(VolumeWriteError, match=r"-1\.\.3 do not fit uint16"):
        write_volume(tmp_path / "x.nii.gz", np.array([-1, 3]).reshape(1, 1, 2), Geometry((1, 1, 1), (0, 0, 0)))


def test_shape_mismatch_names_both_shapes(tmp_path):
    volume = Volume(np.zeros((2, 3, 4), np.uint8), Geometry((1, 1, 1), (0, 0, 0)))
    with pytest.raises(VolumeWriteError, match=r"\(2, 3, 5\).*\(2, 3, 4\)"):
        write_volume(tmp_path / "x.nii.gz", np.zeros((2, 3, 5), np.uint8), volume)


def test_unsupported_suffix(tmp_path):
    with pytest.raises(VolumeWriteError, match="unsupported output type"):
        write_volume(tmp_path / "x.png", np.zeros((1, 2, 2)), Geometry((1, 1, 1), (0, 0, 0)))


def test_failed_write_leaves_existing_file_untouched_and_no_temporaries(tmp_path):
    geometry = Geometry((1, 1, 1), (0, 0, 0))
    target = tmp_path / "keep.nii.gz"
    write_volume(target, np.ones((2, 2, 2), np.uint8), geometry)
    before = target.read_bytes()
    with pytest.raises(VolumeWriteError, match="complex64 cannot be written"):
        write_volume(target, np.zeros((2, 2, 2), np.complex64), geometry)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.nii.gz"]


def test_gzip_nifti_bytes_depend_only_on_content(tmp_path):
    """No write time or (temporary) file name in the gzip header: identical inputs give identical
    files, whenever and under whatever name they are written."""
    import gzip

    geometry = _oblique_anisotropic()
    array = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    first = write_volume(tmp_path / "a.nii.gz", array, geometry)
    (tmp_path / "later").mkdir()
    second = write_volume(tmp_path / "later" / "other_name.nii.gz", array, geometry)
    raw = second.read_bytes()
    assert raw[:4] == b"\x1f\x8b\x08\x00"  # gzip, deflate, no flags: no file name stored
    assert raw[4:8] == b"\0\0\0\0"  # mtime 0
    assert raw == first.read_bytes()
    assert np.array_equal(read_volume(second).array, array) and gzip.decompress(raw)[344:348] == b"n+1\0"
