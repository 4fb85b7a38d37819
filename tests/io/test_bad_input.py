"""Bad files and folders give errors that name the file and the problem."""

from __future__ import annotations

import gzip
import logging
import struct

import numpy as np
import pytest

from napari_medseg.io import VolumeReadError, read_volume, write_volume
from napari_medseg.types import Geometry

GEOMETRY = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))


@pytest.fixture
def valid_nifti(tmp_path):
    data = np.arange(8 * 9 * 10, dtype=np.int16).reshape(8, 9, 10)
    return write_volume(tmp_path / "valid.nii.gz", data, GEOMETRY)


def test_missing_path(tmp_path):
    with pytest.raises(VolumeReadError, match="no such file or folder"):
        read_volume(tmp_path / "absent.nii.gz")


def test_zero_size_file(tmp_path):
    path = tmp_path / "empty.nii.gz"
    path.touch()
    with pytest.raises(VolumeReadError, match=r"empty.nii.gz: the file is empty \(0 bytes\)"):
        read_volume(path)


def test_random_bytes_nifti(tmp_path):
    path = tmp_path / "noise.nii.gz"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(VolumeReadError, match="noise.nii.gz: not a valid NIfTI file"):
        read_volume(path)


def test_truncated_nifti(tmp_path, valid_nifti):
    raw = gzip.decompress(valid_nifti.read_bytes())
    path = tmp_path / "truncated.nii.gz"
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(VolumeReadError, match="truncated.nii.gz: the NIfTI file is truncated or corrupt"):
        read_volume(path)


def test_truncated_gzip_stream(tmp_path, valid_nifti):
    blob = valid_nifti.read_bytes()
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(VolumeReadError, match="cut.nii.gz"):
        read_volume(path)


def test_absurd_header_dimensions_refused_before_allocating(tmp_path, valid_nifti):
    raw = bytearray(gzip.decompress(valid_nifti.read_bytes()))
    struct.pack_into("<8h", raw, 40, 3, 30000, 30000, 30000, 1, 1, 1, 1)
    path = tmp_path / "huge.nii.gz"
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(VolumeReadError, match=r"30000x30000x30000 voxels .* more than this machine can hold"):
        read_volume(path)


def test_nan_and_inf_voxels_are_replaced_with_a_warning(tmp_path, caplog):
    data = np.ones((3, 4, 5), np.float32)
    data[0, 0, 0] = np.nan
    data[1, 1, 1] = np.inf
    data[2, 2, 2] = -np.inf
    data[2, 3, 4] = 7.0
    path = write_volume(tmp_path / "nan.nrrd", data, GEOMETRY)
    with caplog.at_level(logging.WARNING):
        volume = read_volume(path)
    assert np.isfinite(volume.array).all()
    assert volume.array[0, 0, 0] == 1.0 and volume.array[1, 1, 1] == 7.0 and volume.array[2, 2, 2] == 1.0
    assert any("3 NaN or infinite voxels" in w for w in volume.warnings)
    assert "NaN" in caplog.text


def test_4d_image_takes_first_volume_with_warning(tmp_path):
    import SimpleITK as sitk

    frames = [sitk.GetImageFromArray(np.full((3, 4, 5), k, np.int16)) for k in range(3)]
    path = tmp_path / "series4d.nii.gz"
    sitk.WriteImage(sitk.JoinSeries(frames), str(path))
    volume = read_volume(path)
    assert volume.shape == (3, 4, 5)
    assert (volume.array == 0).all()
    assert any("4D image with 3 volumes" in w for w in volume.warnings)


def test_rgb_image_takes_first_component_with_warning(pydicom_files):
    volume = read_volume(pydicom_files / "SC_rgb_small_odd.dcm")
    assert volume.array.ndim == 3
    assert any("components per voxel" in w for w in volume.warnings)


def test_empty_folder(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(VolumeReadError, match="empty: the folder is empty"):
        read_volume(folder)


def test_folder_without_dicom(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("not an image")
    with pytest.raises(VolumeReadError, match="notes: no DICOM series found in the folder"):
        read_volume(folder)


def test_text_file_named_dcm(tmp_path):
    path = tmp_path / "fake.dcm"
    path.write_text("this is plain text, not DICOM\n" * 20)
    with pytest.raises(VolumeReadError, match="fake.dcm: not a readable DICOM file"):
        read_volume(path)


def test_truncated_dicom(pydicom_files):
    with pytest.raises(VolumeReadError, match="MR_truncated.dcm: DICOM pixel data could not be decoded"):
        read_volume(pydicom_files / "MR_truncated.dcm")


def test_dicom_without_image(pydicom_files):
    with pytest.raises(VolumeReadError, match="rtplan.dcm: the DICOM file holds no image"):
        read_volume(pydicom_files / "rtplan.dcm")


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(b"\x89PNG....")
    with pytest.raises(VolumeReadError, match="photo.png: unsupported file type"):
        read_volume(path)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_truncated_nrrd_and_metaimage(tmp_path, suffix):
    data = np.random.default_rng(0).random((20, 30, 40)).astype(np.float32)
    blob = write_volume(tmp_path / f"full{suffix}", data, GEOMETRY).read_bytes()
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(VolumeReadError, match=f"cut{suffix}: the .* file is truncated or corrupt"):
        read_volume(path)
