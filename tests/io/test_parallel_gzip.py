"""The multi-threaded gzip writer makes one standard gzip stream that every reader reads."""

from __future__ import annotations

import gzip
import zlib

import numpy as np
import pytest
import SimpleITK as sitk

from napari_medseg.io.parallel_gzip import BLOCK_BYTES, ParallelGzipWriter
from napari_medseg.types import Geometry


def _payload(size: int) -> bytes:
    rng = np.random.default_rng(size)
    # Half structure, half noise: compressible like probabilities, not trivially.
    smooth = np.repeat(rng.integers(0, 4, size // 64 + 1, dtype=np.uint8), 64)[: size // 2]
    return smooth.tobytes() + rng.integers(0, 256, size - smooth.size, dtype=np.uint8).tobytes()


def _write(path, chunks, **options) -> bytes:
    with ParallelGzipWriter(path, **options) as handle:
        for chunk in chunks:
            handle.write(chunk)
    return path.read_bytes()


@pytest.mark.parametrize("size", [0, 1, 999, 1000, 1001, 5123])
def test_bytes_come_back_and_are_one_gzip_member(tmp_path, size):
    data = _payload(size)
    written = _write(tmp_path / "a.gz", [data[:7], data[7:3000], data[3000:]], block_bytes=1000, threads=3)
    assert gzip.decompress(written) == data
    stream = zlib.decompressobj(zlib.MAX_WBITS | 16)
    assert stream.decompress(written) == data
    assert stream.eof and stream.unused_data == b""  # one member, nothing after its trailer


def test_output_depends_on_the_data_not_on_threads_or_write_sizes(tmp_path):
    data = _payload(20_000)
    one = _write(tmp_path / "one.gz", [data], block_bytes=1500, threads=1)
    many = _write(tmp_path / "many.gz", [data[i : i + 333] for i in range(0, len(data), 333)], block_bytes=1500, threads=4)
    assert one == many
    assert one[4:8] == b"\0\0\0\0"  # mtime 0: reproducible hashes


def test_itk_reads_a_nifti_written_in_many_blocks(tmp_path):
    from napari_medseg.io import nifti

    array = np.random.default_rng(0).random((40, 64, 64, 17)).astype(np.float32)
    geometry = Geometry(spacing=(2.0, 1.0, 0.5), origin=(1.0, -2.0, 3.0), direction=np.eye(3))
    path = tmp_path / "p.nii.gz"
    nifti.write_nifti(path, array, geometry)  # 11 MB: three blocks
    assert array.nbytes > 2 * BLOCK_BYTES
    back = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert np.array_equal(back, array)


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match="level 12"):
        ParallelGzipWriter(tmp_path / "x.gz", level=12)
    with pytest.raises(ValueError, match="block_bytes 0"):
        ParallelGzipWriter(tmp_path / "x.gz", block_bytes=0)
