"""The NIfTI writer streams voxels block by block: the same bytes as one whole-array copy,
exact geometry, and no copy of the volume in memory."""

from __future__ import annotations

import gzip
import tracemalloc

import numpy as np
import pytest

from napari_medseg.io import nifti, parallel_gzip, read_volume, write_volume
from napari_medseg.io.nifti_header import data_offset, parse_header
from napari_medseg.types import Geometry
from tests.fresh_peak import fresh_figures


def _reference_voxels(array: np.ndarray) -> bytes:
    """The voxel bytes as the writer produced them before it streamed: the whole array
    moved to NIfTI order (channel last on disk), little-endian, in one copy."""
    dtype = np.dtype(array.dtype).newbyteorder("<")
    data = np.moveaxis(array, 3, 0) if array.ndim == 4 else array
    return np.ascontiguousarray(data, dtype=dtype).tobytes()


def _file_bytes(path) -> bytes:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        return handle.read()


def _geometry() -> Geometry:
    angle = 0.4
    rotation = np.array([[np.cos(angle), 0, -np.sin(angle)], [0, 1, 0], [np.sin(angle), 0, np.cos(angle)]])
    return Geometry((2.7, 0.61, 0.83), (-101.123456789, 17.25, 3e-3), rotation)


def _arrays(tmp_path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    probabilities = rng.random((9, 5, 7, 3)).astype(np.float32)
    on_disk = np.memmap(tmp_path / "probabilities.f32", dtype=np.float32, mode="w+", shape=probabilities.shape)
    on_disk[...] = probabilities
    return {
        "probabilities": probabilities,
        "memmap": on_disk,
        "big_endian": probabilities.astype(">f4"),
        "transposed": np.moveaxis(rng.random((3, 9, 5, 7)).astype(np.float32), 0, -1),  # (K, z, y, x) storage
        "image_3d": rng.random((9, 5, 7)).astype(np.float32),
        "labels_3d": rng.integers(0, 4, (9, 5, 7)).astype(np.uint8),
        "int16_strided": rng.integers(-1000, 1000, (18, 5, 14)).astype(np.int16)[::2, :, ::2],
    }


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
@pytest.mark.parametrize("block_bytes", [1, 100, nifti.WRITE_BLOCK_BYTES])
def test_streamed_voxels_are_the_bytes_of_one_whole_copy(tmp_path, monkeypatch, version, suffix, block_bytes):
    monkeypatch.setattr(nifti.write_voxels, "__defaults__", (block_bytes,))
    geometry = _geometry()
    for name, array in _arrays(tmp_path).items():
        path = tmp_path / f"{name}{suffix}"
        nifti.write_nifti(path, array, geometry, version=version)
        raw = _file_bytes(path)
        header = parse_header(raw[: 540 + 4])
        assert header["version"] == version
        offset = data_offset(header)
        assert raw[offset:] == _reference_voxels(array), name
        back = read_volume(path, keep_channels=True)
        assert back.geometry == geometry  # every double, exactly
        np.testing.assert_array_equal(back.array, np.asarray(array))


def test_header_and_extension_bytes_do_not_depend_on_the_blocks(tmp_path, monkeypatch):
    array = _arrays(tmp_path)["probabilities"]
    nifti.write_nifti(tmp_path / "whole.nii", array, _geometry())
    monkeypatch.setattr(nifti.write_voxels, "__defaults__", (1,))
    nifti.write_nifti(tmp_path / "slices.nii", array, _geometry())
    assert _file_bytes(tmp_path / "whole.nii") == _file_bytes(tmp_path / "slices.nii")


_WRITE_PEAK_SCRIPT = """
import os, tracemalloc
import numpy as np
from napari_medseg.io import nifti
probabilities = np.random.default_rng(0).random((64, 64, 64, 4)).astype(np.float32)  # 4 MiB
tracemalloc.start()
with open(os.devnull, "wb") as handle:
    nifti.write_voxels(handle, probabilities, np.dtype("<f4"), block_bytes=1 << 16)
print(tracemalloc.get_traced_memory()[1], probabilities.nbytes)
"""


def test_writing_probabilities_holds_one_block_not_a_copy():
    peak, nbytes = fresh_figures(_WRITE_PEAK_SCRIPT)  # a fresh interpreter: see tests/fresh_peak.py
    assert nbytes == 4 << 20
    assert peak < nbytes / 16, f"peak {peak} bytes while writing {nbytes}"


def test_write_volume_streams_a_memmap_without_loading_it(tmp_path, monkeypatch):
    monkeypatch.setattr(nifti.write_voxels, "__defaults__", (1 << 16,))
    monkeypatch.setattr(parallel_gzip, "BLOCK_BYTES", 1 << 16)  # the compressor holds a few blocks
    shape = (96, 64, 64, 4)  # 6 MiB
    on_disk = np.memmap(tmp_path / "p.f32", dtype=np.float32, mode="w+", shape=shape)
    on_disk[...] = np.random.default_rng(1).random(shape, dtype=np.float32)
    tracemalloc.start()
    try:
        path = write_volume(tmp_path / "prob.nii.gz", on_disk, _geometry(), kind="image")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Beyond a few blocks, each compressing thread holds zlib's state (about 270 KiB at level 4).
    compressors = parallel_gzip.compression_threads() * (400 << 10)
    assert peak < on_disk.nbytes / 8 + compressors, f"peak {peak} bytes while writing {on_disk.nbytes}"
    np.testing.assert_array_equal(read_volume(path, keep_channels=True).array, np.asarray(on_disk))


def test_empty_extents_write_no_voxels(tmp_path):
    for shape in ((3, 0, 4, 2), (0, 5, 4)):
        path = tmp_path / "empty.nii"
        nifti.write_nifti(path, np.zeros(shape, np.float32), _geometry())
        raw = _file_bytes(path)
        assert len(raw) == data_offset(parse_header(raw[:544])), shape
