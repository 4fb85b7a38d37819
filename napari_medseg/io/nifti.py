"""NIfTI-1 header access and a writer that keeps geometry exact.

NIfTI stores geometry as float32 (sform rows, quaternion, pixdim) in RAS+, so a double
geometry cannot survive a NIfTI file bit-exactly on its own. The writer therefore
(1) copies the source file's own geometry fields verbatim when the output shares the
source's grid, so every tool sees the very same header, and (2) stores the exact
double geometry as JSON in a NIfTI extension, which :func:`exact_geometry` returns only
when it agrees with the float32 header (a file edited by another tool falls back to
its header).
"""

from __future__ import annotations

import gzip
import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np

from .limits import release_pages
from ..types import Geometry
from .nifti_header import NIFTI2_HEADER_SIZE, NIFTI2_MAGIC, data_offset, data_shape, open_maybe_gzip, parse_header, read_extensions

HEADER_SIZE = 348
NIFTI1_MAX_EXTENT = 32767  # dim[] is int16 in NIfTI-1
EXTENSION_CODE = 40  # NIFTI_ECODE range above 32 is free for applications; 40 = ours
EXTENSION_TAG = "napari-medseg-geometry"
GEOMETRY_FIELDS = ("qform_code", "sform_code", "quatern", "qoffset", "pixdim", "srow")
# Voxel data goes to the file in blocks of about this many bytes (a z-slab of one channel);
# the gzip stream holds about as much again in compressed bytes per block.
WRITE_BLOCK_BYTES = 1 << 22

_DTYPE_CODES = {
    np.dtype(np.uint8): (2, 8),
    np.dtype(np.int16): (4, 16),
    np.dtype(np.int32): (8, 32),
    np.dtype(np.float32): (16, 32),
    np.dtype(np.float64): (64, 64),
    np.dtype(np.int8): (256, 8),
    np.dtype(np.uint16): (512, 16),
    np.dtype(np.uint32): (768, 32),
    np.dtype(np.int64): (1024, 64),
    np.dtype(np.uint64): (1280, 64),
}
# ITK reads NIfTI in LPS: physical_lps = FLIP @ physical_ras (x and y negated).
_RAS_FROM_LPS_XYZ = np.diag([-1.0, -1.0, 1.0])


_open = open_maybe_gzip


def read_header(path: str | Path) -> dict[str, Any] | None:
    """Raw NIfTI-1 or NIfTI-2 fields needed for geometry and sizing, or None if not NIfTI.

    Returns the dict of :func:`.nifti_header.parse_header` (``dim`` (8 ints),
    ``datatype``, ``bitpix``, ``vox_offset``, the geometry fields, ...) plus
    ``extensions``: a list of (code, bytes).
    """
    path = Path(path)
    with _open(path, "rb") as handle:
        raw = handle.read(NIFTI2_HEADER_SIZE + 4)
        header = parse_header(raw)
        if header is None:
            return None
        header["extensions"] = read_extensions(handle, raw, header)
    return header


def check_complete(path: str | Path, header: dict[str, Any]) -> str | None:
    """None if the file holds all the voxel data its header declares, else the problem.

    ITK silently zero-fills truncated NIfTI data, so the length is checked here by
    streaming through the (decompressed) file once.
    """
    path = Path(path)
    n_dims = header["dim"][0]
    if not 1 <= n_dims <= 7:
        return f"invalid number of dimensions {n_dims} in the header"
    n_voxels = math.prod(data_shape(header))
    expected = data_offset(header) + n_voxels * max(int(header["bitpix"]), 8) // 8
    total = 0
    try:
        with _open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                total += len(chunk)
                if total >= expected:
                    return None
    except (EOFError, OSError, gzip.BadGzipFile) as exc:
        return f"the compressed stream is cut short or corrupt ({exc})"
    return f"the file holds {total} bytes but its header declares {expected}: it is truncated"


def geometry_fields(header: dict[str, Any]) -> dict[str, Any]:
    """The subset of a header that fixes the geometry (copied verbatim on write)."""
    return {key: header[key] for key in GEOMETRY_FIELDS}


def exact_geometry(header: dict[str, Any], file_geometry: Geometry) -> Geometry | None:
    """The exact geometry stored by our writer, if present and consistent with the file."""
    for code, payload in header.get("extensions", []):
        if code != EXTENSION_CODE:
            continue
        try:
            data = json.loads(payload.rstrip(b"\0").decode("utf-8"))
            if data.get("tag") != EXTENSION_TAG:
                continue
            stored = Geometry(data["spacing"], data["origin"], data["direction"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return None
        return stored if stored.matches(file_geometry) else None
    return None


def _quaternion_from_rotation(rotation: np.ndarray) -> tuple[np.ndarray, float]:
    """(b, c, d) and qfac for a 3x3 orthonormal RAS matrix (nifti1_io's algorithm)."""
    r = rotation.copy()
    qfac = 1.0
    if np.linalg.det(r) < 0:
        r[:, 2] = -r[:, 2]
        qfac = -1.0
    a = 1.0 + r[0, 0] + r[1, 1] + r[2, 2]
    if a > 0.5:
        a = 0.5 * np.sqrt(a)
        b = 0.25 * (r[2, 1] - r[1, 2]) / a
        c = 0.25 * (r[0, 2] - r[2, 0]) / a
        d = 0.25 * (r[1, 0] - r[0, 1]) / a
    else:
        xd = 1.0 + r[0, 0] - (r[1, 1] + r[2, 2])
        yd = 1.0 + r[1, 1] - (r[0, 0] + r[2, 2])
        zd = 1.0 + r[2, 2] - (r[0, 0] + r[1, 1])
        if xd > 1.0:
            b = 0.5 * np.sqrt(xd)
            c = 0.25 * (r[0, 1] + r[1, 0]) / b
            d = 0.25 * (r[0, 2] + r[2, 0]) / b
            a = 0.25 * (r[2, 1] - r[1, 2]) / b
        elif yd > 1.0:
            c = 0.5 * np.sqrt(yd)
            b = 0.25 * (r[0, 1] + r[1, 0]) / c
            d = 0.25 * (r[1, 2] + r[2, 1]) / c
            a = 0.25 * (r[0, 2] - r[2, 0]) / c
        else:
            d = 0.5 * np.sqrt(zd)
            b = 0.25 * (r[0, 2] + r[2, 0]) / d
            c = 0.25 * (r[1, 2] + r[2, 1]) / d
            a = 0.25 * (r[1, 0] - r[0, 1]) / d
        if a < 0:
            b, c, d = -b, -c, -d
    return np.array([b, c, d]), qfac


def fields_from_geometry(geometry: Geometry) -> dict[str, Any]:
    """NIfTI geometry fields (float32 precision) for a geometry; codes 1 (scanner)."""
    spacing_xyz = np.asarray(geometry.spacing[::-1])
    origin_xyz = np.asarray(geometry.origin[::-1])
    direction_xyz = geometry.direction_matrix[::-1, ::-1]
    rotation_ras = _RAS_FROM_LPS_XYZ @ direction_xyz
    quatern, qfac = _quaternion_from_rotation(rotation_ras)
    affine = np.zeros((3, 4))
    affine[:, :3] = rotation_ras * spacing_xyz[None, :]
    affine[:, 3] = _RAS_FROM_LPS_XYZ @ origin_xyz
    return {
        "qform_code": 1,
        "sform_code": 1,
        "quatern": list(quatern),
        "qoffset": list(affine[:, 3]),
        "pixdim": [qfac, *spacing_xyz, 1.0, 1.0, 1.0, 1.0],
        "srow": list(affine.ravel()),
    }


def write_nifti(
    path: str | Path,
    array: np.ndarray,
    geometry: Geometry,
    source_fields: dict[str, Any] | None = None,
    version: int | None = None,
) -> None:
    """Write a NIfTI single file (gzip when the name ends in .gz), not atomically; the
    voxels are streamed block by block (:func:`write_voxels`), never copied whole.

    Args:
        path: destination (.nii or .nii.gz).
        array: (z, y, x) or (z, y, x, C); channels are stored as the 5th NIfTI axis.
        geometry: the grid, stored exactly in an extension and in float32 header fields.
        source_fields: header geometry fields of the file this grid came from; used
            verbatim so other tools see the source's exact header.
        version: 1 or 2; by default NIfTI-1 unless an extent exceeds its 32767 limit.
    """
    path = Path(path)
    if version is None:
        version = 2 if max(array.shape) > NIFTI1_MAX_EXTENT else 1
    if version not in (1, 2):
        raise ValueError(f"NIfTI version {version} must be 1 or 2")
    dtype = np.dtype(array.dtype).newbyteorder("=")
    if dtype not in _DTYPE_CODES:
        raise ValueError(f"cannot write dtype {array.dtype} to NIfTI")
    datatype, bitpix = _DTYPE_CODES[dtype]
    nz, ny, nx = array.shape[:3]
    if array.ndim == 4:
        dims = [5, nx, ny, nz, 1, array.shape[3], 1, 1]
        intent_code = 1007  # NIFTI_INTENT_VECTOR
    else:
        dims = [3, nx, ny, nz, 1, 1, 1, 1]
        intent_code = 0
    fields = dict(source_fields) if source_fields else fields_from_geometry(geometry)
    fields["pixdim"] = list(fields["pixdim"])[:4] + [1.0, 1.0, 1.0, 1.0]

    payload = json.dumps(
        {
            "tag": EXTENSION_TAG,
            "spacing": list(geometry.spacing),
            "origin": list(geometry.origin),
            "direction": [list(row) for row in geometry.direction],
        }
    ).encode("utf-8")
    extension_size = 8 + len(payload)
    extension_size += (-extension_size) % 16
    payload = payload.ljust(extension_size - 8, b"\0")
    header_size = HEADER_SIZE if version == 1 else NIFTI2_HEADER_SIZE
    vox_offset = header_size + 4 + extension_size
    pack = _pack_nifti1 if version == 1 else _pack_nifti2
    header = pack(dims, datatype, bitpix, intent_code, fields, vox_offset)

    with _open(path, "wb") as handle:
        handle.write(bytes(header))
        handle.write(struct.pack("<4B", 1, 0, 0, 0))
        handle.write(struct.pack("<2i", extension_size, EXTENSION_CODE))
        handle.write(payload)
        write_voxels(handle, array, dtype.newbyteorder("<"))


def write_voxels(handle, array: np.ndarray, dtype: np.dtype, block_bytes: int = WRITE_BLOCK_BYTES) -> None:
    """Write ``array`` to ``handle`` in NIfTI voxel order as ``dtype``, one block at a time.

    Args:
        handle: a binary file or gzip stream.
        array: (z, y, x) or (z, y, x, C), any layout, in memory or a ``numpy.memmap``.
        dtype: the stored dtype (little-endian).
        block_bytes: about the bytes of one block (at least one z-slice of one channel).

    NIfTI order is x fastest, then y, z, and the channel last, so the file holds channel
    0's whole volume, then channel 1's: blocks are z-slabs of one channel, converted on
    their own. Beyond ``array`` this holds one block, never a copy of the volume; a
    memmap's pages are released after each block.
    """
    channels = array.shape[3] if array.ndim == 4 else 1
    slice_bytes = max(1, math.prod(array.shape[1:3]) * dtype.itemsize)
    slab = max(1, block_bytes // slice_bytes)
    for c in range(channels):
        volume = array[..., c] if array.ndim == 4 else array
        for start in range(0, volume.shape[0], slab):
            block = np.ascontiguousarray(volume[start : start + slab], dtype=dtype)
            if block.size:  # a memoryview of an empty array cannot be cast to bytes
                handle.write(memoryview(block).cast("B"))
            del block
            release_pages(array)


def _pack_nifti1(dims, datatype, bitpix, intent_code, fields, vox_offset) -> bytearray:
    header = bytearray(HEADER_SIZE)
    struct.pack_into("<i", header, 0, HEADER_SIZE)
    header[38:39] = b"r"
    struct.pack_into("<8h", header, 40, *dims)
    struct.pack_into("<h", header, 68, intent_code)
    struct.pack_into("<hh", header, 70, datatype, bitpix)
    struct.pack_into("<8f", header, 76, *fields["pixdim"])
    struct.pack_into("<f", header, 108, float(vox_offset))
    struct.pack_into("<ff", header, 112, 1.0, 0.0)  # scl_slope, scl_inter
    header[123] = 2 | 8  # mm and seconds
    description = b"napari-medseg"
    header[148 : 148 + len(description)] = description
    struct.pack_into("<hh", header, 252, int(fields["qform_code"]), int(fields["sform_code"]))
    struct.pack_into("<3f", header, 256, *fields["quatern"])
    struct.pack_into("<3f", header, 268, *fields["qoffset"])
    struct.pack_into("<12f", header, 280, *fields["srow"])
    header[344:348] = b"n+1\0"
    return header


def _pack_nifti2(dims, datatype, bitpix, intent_code, fields, vox_offset) -> bytearray:
    """NIfTI-2: int64 extents and float64 geometry (so fields keep double precision)."""
    header = bytearray(NIFTI2_HEADER_SIZE)
    struct.pack_into("<i", header, 0, NIFTI2_HEADER_SIZE)
    header[4:12] = NIFTI2_MAGIC
    struct.pack_into("<hh", header, 12, datatype, bitpix)
    struct.pack_into("<8q", header, 16, *dims)
    struct.pack_into("<8d", header, 104, *fields["pixdim"])
    struct.pack_into("<q", header, 168, vox_offset)
    struct.pack_into("<dd", header, 176, 1.0, 0.0)  # scl_slope, scl_inter
    description = b"napari-medseg"
    header[240 : 240 + len(description)] = description
    struct.pack_into("<ii", header, 344, int(fields["qform_code"]), int(fields["sform_code"]))
    struct.pack_into("<3d", header, 352, *fields["quatern"])
    struct.pack_into("<3d", header, 376, *fields["qoffset"])
    struct.pack_into("<12d", header, 400, *fields["srow"])
    struct.pack_into("<ii", header, 500, 2 | 8, intent_code)  # xyzt_units (mm, s), intent_code
    return header
