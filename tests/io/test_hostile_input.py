"""Hostile or broken inputs, one table: each case builds its file(s) and names the error.

Classes covered: paths that leave the header's folder (absolute, '..', links out, LIST
members, patterns), FIFOs and device files, declared sizes against bytes and memory for
every format (NIfTI, NRRD, MetaImage, DICOM file, series, multi-frame), non-finite
values, inconsistent headers, inconsistent series.
"""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pydicom
import pytest

from napari_medseg.cli.main import main
from napari_medseg.io import VolumeReadError, read_volume, write_volume
from napari_medseg.io.limits import AllocationError, check_allocation
from napari_medseg.types import Geometry

GEOMETRY = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))


# ------------------------------------------------------------------ builders


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def _mhd(folder: Path, data_file: str, dims: str = "2 2 2", extra: str = "") -> Path:
    return _write(
        folder / "image.mhd",
        f"ObjectType = Image\nNDims = 3\nDimSize = {dims}\nElementType = MET_UCHAR\n{extra}ElementDataFile = {data_file}\n",
    )


def _nhdr(folder: Path, data_file: str, field: str = "data file", sizes: str = "2 2 2", encoding: str = "raw") -> Path:
    return _write(
        folder / "image.nhdr",
        f"NRRD0004\ntype: uint8\ndimension: 3\nsizes: {sizes}\nencoding: {encoding}\n{field}: {data_file}\n",
    )


def _outside(folder: Path) -> Path:
    secret = folder.parent / "secret.raw"
    secret.write_bytes(bytes(range(8)))
    return secret


def mhd_absolute(folder):
    return _mhd(folder, str(_outside(folder)))


def mhd_dotdot(folder):
    _outside(folder)
    return _mhd(folder, "../secret.raw")


def mhd_subfolder(folder):
    (folder / "sub").mkdir()
    (folder / "sub" / "data.raw").write_bytes(bytes(8))
    return _mhd(folder, "sub/data.raw")


def mhd_link_out(folder):
    (folder / "data.raw").symlink_to(_outside(folder))
    return _mhd(folder, "data.raw")


def mhd_fifo(folder):
    os.mkfifo(folder / "data.raw")
    return _mhd(folder, "data.raw")


def mhd_device(folder):
    (folder / "data.raw").symlink_to("/dev/zero")
    return _mhd(folder, "data.raw")


def mhd_list_member_out(folder):
    _outside(folder)
    (folder / "s0.raw").write_bytes(bytes(4))
    return _write(
        folder / "image.mhd",
        "ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\n"
        "ElementDataFile = LIST 2D\ns0.raw\n../secret.raw\n",
    )


def mhd_pattern(folder):
    return _mhd(folder, "slice%03d.raw 1 2 1")


def mhd_missing(folder):
    return _mhd(folder, "absent.raw")


def mhd_short_data(folder):
    (folder / "data.raw").write_bytes(bytes(32))
    return _mhd(folder, "data.raw", dims="512 512 512")


def mha_local_short(folder):
    path = folder / "image.mha"
    path.write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 64 64 64\nElementType = MET_FLOAT\nElementDataFile = LOCAL\n" + bytes(32))
    return path


def mha_compressed_bomb(folder):
    path = folder / "image.mha"
    path.write_bytes(
        b"ObjectType = Image\nNDims = 3\nDimSize = 4096 4096 4096\nElementType = MET_FLOAT\n"
        b"CompressedData = True\nElementDataFile = LOCAL\n" + gzip.compress(bytes(64))
    )
    return path


def nhdr_absolute(folder):
    return _nhdr(folder, str(_outside(folder)))


def nhdr_dotdot(folder):
    _outside(folder)
    return _nhdr(folder, "../../../secret.raw", field="datafile")


def nhdr_link_out(folder):
    (folder / "data.raw").symlink_to(_outside(folder))
    return _nhdr(folder, "data.raw")


def nhdr_fifo(folder):
    os.mkfifo(folder / "data.raw")
    return _nhdr(folder, "data.raw")


def nhdr_list_member_out(folder):
    _outside(folder)
    (folder / "s0.raw").write_bytes(bytes(4))
    return _write(
        folder / "image.nhdr",
        "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 2 2\nencoding: raw\ndata file: LIST 2\ns0.raw\n../secret.raw\n",
    )


def nhdr_pattern(folder):
    return _nhdr(folder, "slice%03d.raw 1 2 1")


def nrrd_attached_detached_elsewhere(folder):
    path = folder / "image.nrrd"
    path.write_bytes(f"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 2 2\ndata file: {_outside(folder)}\n\n".encode())
    return path


def nrrd_short_data(folder):
    path = folder / "image.nrrd"
    path.write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 1000 1000 1000\nencoding: raw\n\n" + bytes(32))
    return path


def nrrd_gzip_bomb(folder):
    path = folder / "image.nrrd"
    path.write_bytes(
        b"NRRD0004\ntype: float\ndimension: 3\nsizes: 4096 4096 4096\nencoding: gzip\n\n" + gzip.compress(bytes(64))
    )
    return path


def fifo_named_directly(folder):
    path = folder / "image.nii.gz"
    os.mkfifo(path)
    return path


def _nifti_bytes(tmp: Path) -> bytearray:
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    return bytearray(write_volume(tmp / "source.nii", data, GEOMETRY).read_bytes())


def _patched_nifti(folder: Path, fmt: str, offset: int, *values) -> Path:
    raw = _nifti_bytes(folder)
    struct.pack_into("<" + fmt, raw, offset, *values)
    path = folder / "patched.nii"
    path.write_bytes(bytes(raw))
    return path


def nifti_bitpix_mismatch(folder):
    return _patched_nifti(folder, "h", 72, 16)  # float32 (datatype 16) with bitpix 16


def nifti_unknown_datatype(folder):
    return _patched_nifti(folder, "h", 70, 99)


def nifti_negative_pixdim(folder):
    return _patched_nifti(folder, "f", 80, -1.0)


def nifti_zero_pixdim(folder):
    return _patched_nifti(folder, "f", 84, 0.0)


def nifti_nan_pixdim(folder):
    return _patched_nifti(folder, "f", 88, float("nan"))


def nifti_nan_qform(folder):
    return _patched_nifti(folder, "f", 256, float("nan"))


def nifti_nan_sform(folder):
    return _patched_nifti(folder, "f", 280, float("nan"))


def nifti_short_uncompressed(folder):
    raw = _nifti_bytes(folder)
    path = folder / "short.nii"
    path.write_bytes(bytes(raw[: len(raw) - 100]))
    return path


def nifti_huge_dims_gz(folder):
    raw = _nifti_bytes(folder)
    struct.pack_into("<8h", raw, 40, 3, 32000, 32000, 32000, 1, 1, 1, 1)
    path = folder / "huge.nii.gz"
    path.write_bytes(gzip.compress(bytes(raw)))
    return path


def nifti2_huge_dims(folder):
    import nibabel

    path = folder / "huge2.nii"
    nibabel.save(nibabel.Nifti2Image(np.zeros((2, 2, 2), np.uint8), np.eye(4)), path)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<8q", raw, 16, 3, 10**6, 10**6, 10**6, 1, 1, 1, 1)
    path.write_bytes(bytes(raw))
    return path


def _dicom(folder: Path, name: str = "slice.dcm", rows: int = 4, columns: int = 4, frames: int | None = None,
           pixel_bytes: int | None = None, position=(0.0, 0.0, 0.0), orientation=(1, 0, 0, 0, 1, 0),
           series_uid: str = "1.2.3.4.5") -> Path:
    """A small native CT slice (16-bit) built with pydicom."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(folder / name), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "CT"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelSpacing = [1.0, 1.0]
    ds.ImagePositionPatient = list(position)
    ds.ImageOrientationPatient = list(orientation)
    ds.InstanceNumber = 1
    if frames is not None:
        ds.NumberOfFrames = frames
    n_bytes = rows * columns * 2 * (frames or 1) if pixel_bytes is None else pixel_bytes
    ds.PixelData = bytes(n_bytes + n_bytes % 2)
    path = folder / name
    ds.save_as(path, enforce_file_format=True)
    return path


def dicom_65535_from_32_bytes(folder):
    return _dicom(folder, rows=65535, columns=65535, pixel_bytes=32)


def dicom_6000_from_32_bytes(folder):
    return _dicom(folder, rows=6000, columns=6000, pixel_bytes=32)


def dicom_truncated_pixels(folder):
    return _dicom(folder, rows=64, columns=64, pixel_bytes=64 * 64 * 2 - 200)


def dicom_multiframe_100000(folder):
    return _dicom(folder, rows=64, columns=64, frames=100000, pixel_bytes=64 * 64 * 2 * 2)


def _series(folder: Path, positions, orientations=None, sizes=None) -> Path:
    series = folder / "series"
    series.mkdir()
    for k, position in enumerate(positions):
        rows = sizes[k] if sizes else 4
        orientation = orientations[k] if orientations else (1, 0, 0, 0, 1, 0)
        _dicom(series, f"s{k}.dcm", rows=rows, columns=rows, position=position, orientation=orientation)
    return series


def series_member_absurd(folder):
    series = _series(folder, [(0, 0, z) for z in range(3)])
    _dicom(series, "s9.dcm", rows=4, columns=4, position=(0, 0, 3), pixel_bytes=8)  # truncated member
    return series


def series_coincident(folder):
    return _series(folder, [(0, 0, 5.0)] * 4)


def series_sizes_differ(folder):
    return _series(folder, [(0, 0, z) for z in range(3)], sizes=[4, 4, 8])


# (builder, error type, fragment of the message)
CASES = [
    (mhd_absolute, VolumeReadError, "image.mhd: its data file '/"),
    (mhd_dotdot, VolumeReadError, "its data file '../secret.raw' is refused"),
    (mhd_subfolder, VolumeReadError, "its data file 'sub/data.raw' is refused"),
    (mhd_link_out, VolumeReadError, "its data file 'data.raw' is a link to"),
    (mhd_fifo, VolumeReadError, "FIFO (named pipe), not a regular file"),
    (mhd_device, VolumeReadError, "is a link to '/dev/zero'"),
    (mhd_list_member_out, VolumeReadError, "its data file '../secret.raw' is refused"),
    (mhd_pattern, VolumeReadError, "is a file-name pattern"),
    (mhd_missing, VolumeReadError, "its data file"),
    (mhd_short_data, VolumeReadError, "512x512x512 voxels x 1 bytes (128.0 MiB) is more than the file holds (32 bytes)"),
    (mha_local_short, VolumeReadError, "64x64x64 voxels x 4 bytes (1.0 MiB) is more than the file holds"),
    (mha_compressed_bomb, VolumeReadError, "4096x4096x4096 voxels x 4 bytes (256.0 GiB) is more than the file holds"),
    (nhdr_absolute, VolumeReadError, "image.nhdr: its data file '/"),
    (nhdr_dotdot, VolumeReadError, "its data file '../../../secret.raw' is refused"),
    (nhdr_link_out, VolumeReadError, "is a link to"),
    (nhdr_fifo, VolumeReadError, "FIFO (named pipe)"),
    (nhdr_list_member_out, VolumeReadError, "its data file '../secret.raw' is refused"),
    (nhdr_pattern, VolumeReadError, "is a file-name pattern"),
    (nrrd_attached_detached_elsewhere, VolumeReadError, "image.nrrd: its data file '/"),
    (nrrd_short_data, VolumeReadError, "1000x1000x1000 voxels x 4 bytes (3.7 GiB) is more than the file holds"),
    (nrrd_gzip_bomb, VolumeReadError, "is more than the file holds"),
    (fifo_named_directly, VolumeReadError, "image.nii.gz: the path is a FIFO"),
    (nifti_bitpix_mismatch, VolumeReadError, "datatype 16 needs bitpix 32 but the header says bitpix 16"),
    (nifti_unknown_datatype, VolumeReadError, "unknown datatype 99"),
    (nifti_negative_pixdim, VolumeReadError, "pixdim[1] = -1 is not a positive finite spacing (a negative one would flip"),
    (nifti_zero_pixdim, VolumeReadError, "pixdim[2] = 0 is not a positive finite spacing"),
    (nifti_nan_pixdim, VolumeReadError, "pixdim[3] = nan"),
    (nifti_nan_qform, VolumeReadError, "the qform has non-finite numbers"),
    (nifti_nan_sform, VolumeReadError, "the sform has non-finite numbers"),
    (nifti_short_uncompressed, VolumeReadError, "short.nii: the voxel data of 6x5x4 voxels x 4 bytes"),
    (nifti_huge_dims_gz, VolumeReadError, "32000x32000x32000 voxels x 4 bytes"),
    (nifti2_huge_dims, VolumeReadError, "1000000x1000000x1000000 voxels"),
    (dicom_65535_from_32_bytes, VolumeReadError, "1x65535x65535 voxels x 2 bytes (8.0 GiB) is more than the file holds (32 bytes)"),
    (dicom_6000_from_32_bytes, VolumeReadError, "1x6000x6000 voxels x 2 bytes (68.7 MiB) is more than the file holds (32 bytes)"),
    (dicom_truncated_pixels, VolumeReadError, "slice.dcm: DICOM pixel data could not be decoded: the voxel data of 1x64x64"),
    (dicom_multiframe_100000, VolumeReadError, "100000x64x64 voxels x 2 bytes (781.2 MiB) is more than the file holds (16.0 KiB)"),
    (series_member_absurd, VolumeReadError, "s9.dcm: the voxel data of 1x4x4 voxels x 2 bytes (32 B) is more than the file holds (8 bytes)"),
    (series_coincident, VolumeReadError, "lie at the same position, e.g. s0.dcm and s1.dcm"),
    (series_sizes_differ, VolumeReadError, "series members differ in size: s0.dcm is 4x4, s2.dcm is 8x8"),
]


@pytest.mark.parametrize("build, error, fragment", CASES, ids=[case[0].__name__ for case in CASES])
def test_hostile_input_is_refused(tmp_path, build, error, fragment):
    folder = tmp_path / "case"
    folder.mkdir()
    path = build(folder)
    with pytest.raises(error) as caught:
        read_volume(path)
    assert fragment in str(caught.value)


# ------------------------------------------------------------ warnings, not errors


def test_nifti_nan_and_inf_handled_like_other_formats(tmp_path, caplog):
    data = np.ones((3, 4, 5), np.float32)
    data[0, 0, 0], data[1, 1, 1], data[2, 2, 2], data[2, 3, 4] = np.nan, np.inf, -np.inf, 7.0
    for suffix in (".nii", ".nii.gz", ".nrrd", ".mha"):
        volume = read_volume(write_volume(tmp_path / f"nan{suffix}", data, GEOMETRY))
        assert (volume.array[0, 0, 0], volume.array[1, 1, 1], volume.array[2, 2, 2]) == (1.0, 7.0, 1.0), suffix
        assert any("3 NaN or infinite voxels" in w for w in volume.warnings), suffix
    assert "nan.nii.gz: 3 NaN or infinite voxels" in caplog.text


def test_dicom_series_with_mixed_orientations_is_warned_by_name(tmp_path):
    axial, coronal = (1, 0, 0, 0, 1, 0), (1, 0, 0, 0, 0, -1)
    folder = _series(tmp_path, [(0, 0, z) for z in range(3)], orientations=[axial, axial, coronal])
    volume = read_volume(folder)
    assert any("mixes slice orientations" in w and "s2.dcm" in w for w in volume.warnings)


def test_fifo_in_dicom_folder_is_skipped_by_name_without_hanging(tmp_path):
    folder = _series(tmp_path, [(0, 0, z) for z in range(3)])
    os.mkfifo(folder / "s3.dcm")
    (folder / "s4.dcm").symlink_to(_outside(tmp_path / "series"))
    volume = read_volume(folder)  # a hang here fails the suite's timeout
    assert volume.shape == (3, 4, 4)
    assert any("s3.dcm (not a regular file)" in w and "s4.dcm (a link out" in w for w in volume.warnings)


def test_unreadable_dicom_member_is_named(tmp_path):
    folder = _series(tmp_path, [(0, 0, z) for z in range(3)])
    (folder / "s2.dcm").write_bytes(b"\0" * 128 + b"DICM" + np.random.default_rng(0).bytes(300))
    volume = read_volume(folder)
    assert volume.shape[0] == 2
    assert any("could not be read into any series: s2.dcm" in w for w in volume.warnings)


def test_truncated_dicom_member_refuses_the_series_by_name(tmp_path):
    folder = _series(tmp_path, [(0, 0, z) for z in range(3)])
    blob = (folder / "s1.dcm").read_bytes()
    (folder / "s1.dcm").write_bytes(blob[:-10])
    with pytest.raises(VolumeReadError, match=r"s1.dcm: the voxel data of 1x4x4 voxels .* more than the file holds"):
        read_volume(folder)


def test_mhd_list_and_nhdr_list_beside_the_header_still_read(tmp_path):
    for k in range(2):
        (tmp_path / f"s{k}.raw").write_bytes(bytes([k]) * 4)
    mhd = _write(
        tmp_path / "list.mhd",
        "ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\nElementDataFile = LIST 2D\ns0.raw\ns1.raw\n",
    )
    np.testing.assert_array_equal(read_volume(mhd).array[:, 0, 0], [0, 1])
    nhdr = _write(tmp_path / "list.nhdr", "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 2 2\nencoding: raw\ndata file: LIST 2\ns0.raw\ns1.raw\n")
    np.testing.assert_array_equal(read_volume(nhdr).array[:, 0, 0], [0, 1])


def test_data_file_link_inside_the_folder_is_followed(tmp_path):
    (tmp_path / "real.raw").write_bytes(bytes(range(8)))
    (tmp_path / "alias.raw").symlink_to(tmp_path / "real.raw")
    volume = read_volume(_nhdr(tmp_path, "alias.raw"))
    assert volume.array.ravel().tolist() == list(range(8))


# ------------------------------------------------------------------ the gate itself


def test_check_allocation_names_numbers_and_source():
    with pytest.raises(AllocationError, match=r"cfg.json: the resampled volume of 100000x100000x100000 voxels"):
        check_allocation("resampled volume", (10**5,) * 3, 4, "cfg.json")
    with pytest.raises(AllocationError, match=r"empty or negative size \(4, 0\)"):
        check_allocation("voxel data", (4, 0), 1, "x")
    assert check_allocation("voxel data", (2, 3), 2.0, "x", bytes_present=12) == 12


# ----------------------------------------------------------- through the command line


@pytest.mark.parametrize(
    "build, fragment",
    [
        (mhd_absolute, "its data file"),
        (nhdr_fifo, "FIFO"),
        (dicom_65535_from_32_bytes, "is more than the file holds (32 bytes)"),
        (nifti_bitpix_mismatch, "bitpix"),
    ],
    ids=lambda case: getattr(case, "__name__", "fragment"),
)
def test_cli_exit_2_with_message_and_no_traceback(tmp_path, capsys, build, fragment):
    folder = tmp_path / "case"
    folder.mkdir()
    path = build(folder)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and str(path.name) in err
    assert "Traceback" not in err


# ------------------------------------------------------------------ peak memory


def test_absurd_dicom_refused_before_allocation_under_a_memory_limit(tmp_path):
    """The 65535 x 65535 slice (8 GiB declared) is refused inside a 1 GiB address space."""
    path = dicom_65535_from_32_bytes(tmp_path)
    script = textwrap.dedent(
        f"""
        import resource, sys
        from napari_medseg.io import read_volume, VolumeReadError
        import SimpleITK, pydicom  # loaded before the limit: libraries map much address space
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        limit = before * 1024 + (1 << 30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        try:
            read_volume({str(path)!r})
        except VolumeReadError as exc:
            print("refused", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("refused")
    growth_kib = int(result.stdout.split()[1])  # beyond what the imports took
    assert growth_kib < 100 * 1024  # far below the 8 GiB the header declares


# ------------------------------------------------------------------ NIfTI-2


ROTATED = Geometry((2.5, 1.1, 0.7), (30.0, -20.0, 10.0), ((1, 0, 0), (0, 0.8, -0.6), (0, 0.6, 0.8)))


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti2_written_on_request_reads_back_exactly_and_in_nibabel(tmp_path, suffix):
    import nibabel

    data = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32)
    path = write_volume(tmp_path / f"v2{suffix}", data, ROTATED, nifti_version=2)
    assert isinstance(nibabel.load(path), nibabel.Nifti2Image)
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.array, data)
    assert volume.geometry == ROTATED  # bit-exact through the extension
    np.testing.assert_array_equal(np.asarray(nibabel.load(path).dataobj).T, data)


def test_nifti2_from_nibabel_matches_its_data_and_affine(tmp_path):
    import nibabel

    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(6, 5, 4)  # nibabel order: x, y, z
    affine = np.array([[0, 0, 2.5, 10], [0.8, 0, 0, -20], [0, 1.1, 0, 30], [0, 0, 0, 1]])
    path = tmp_path / "nib2.nii.gz"
    nibabel.save(nibabel.Nifti2Image(data, affine), path)
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.array, data.T)
    flip = np.diag([-1.0, -1.0, 1.0])  # RAS -> LPS, then (x, y, z) -> (z, y, x)
    for index in ([0, 0, 0], [3, 2, 1], [5, 4, 3]):
        ras = affine @ np.array([*index, 1.0])
        lps_zyx = (flip @ ras[:3])[::-1]
        np.testing.assert_allclose(volume.geometry.index_to_physical([index[::-1]])[0], lps_zyx, atol=1e-9)


def test_nifti2_written_when_an_extent_needs_it(tmp_path):
    from napari_medseg.io import nifti

    data = np.zeros((1, 1, 40000), np.uint8)
    path = write_volume(tmp_path / "long.nii.gz", data, GEOMETRY)
    assert nifti.read_header(path)["version"] == 2
    assert read_volume(path).shape == (1, 1, 40000)
