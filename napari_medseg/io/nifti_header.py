"""NIfTI-1 and NIfTI-2 headers: parsing, consistency checks, sizes.

Both versions are parsed into one dict with the same keys (NIfTI-2 only widens the
types: int64 dims, float64 geometry), so the rest of the package does not care which
version a file is. Checks here refuse what SimpleITK would silently misread: a
datatype that disagrees with bitpix, and spacing, qform or sform that are not finite
or not positive (a negative pixdim would flip an axis without a word).
"""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path
from typing import Any, BinaryIO

NIFTI1_HEADER_SIZE = 348
NIFTI2_HEADER_SIZE = 540
NIFTI2_MAGIC = b"n+2\0\r\n\x1a\n"

# datatype code -> (bits per voxel, numpy dtype name or None where we cannot decode it)
DATATYPES: dict[int, tuple[int, str | None]] = {
    2: (8, "u1"), 4: (16, "i2"), 8: (32, "i4"), 16: (32, "f4"), 32: (64, None), 64: (64, "f8"),
    128: (24, None), 256: (8, "i1"), 512: (16, "u2"), 768: (32, "u4"), 1024: (64, "i8"),
    1280: (64, "u8"), 1536: (128, None), 1792: (128, None), 2048: (256, None), 2304: (32, None),
}
# (offset, struct format) of each field, per version
_LAYOUT = {
    1: {
        "dim": (40, "8h"), "intent_code": (68, "h"), "datatype": (70, "h"), "bitpix": (72, "h"),
        "pixdim": (76, "8f"), "vox_offset": (108, "f"), "scl_slope": (112, "f"), "scl_inter": (116, "f"),
        "qform_code": (252, "h"), "sform_code": (254, "h"), "quatern": (256, "3f"), "qoffset": (268, "3f"),
        "srow": (280, "12f"),
    },
    2: {
        "datatype": (12, "h"), "bitpix": (14, "h"), "dim": (16, "8q"), "pixdim": (104, "8d"),
        "vox_offset": (168, "q"), "scl_slope": (176, "d"), "scl_inter": (184, "d"),
        "qform_code": (344, "i"), "sform_code": (348, "i"), "quatern": (352, "3d"), "qoffset": (376, "3d"),
        "srow": (400, "12d"), "intent_code": (504, "i"),
    },
}
_VECTOR_FIELDS = ("dim", "pixdim", "quatern", "qoffset", "srow")
# zlib level of written .nii.gz files (gzip's own default is 6): speed over the last
# percent of size, for probability maps of gigabytes.
GZIP_LEVEL = 4


def open_maybe_gzip(path: Path, mode: str) -> BinaryIO:
    """The file itself, or its gzip stream when the name ends in .gz.

    A gzip stream opened for writing is compressed on every CPU the process may use
    (:class:`~napari_medseg.io.parallel_gzip.ParallelGzipWriter`) and records neither a file
    name nor a time in its header (as ``gzip -n``): the same header and voxels give the same
    bytes, so output hashes are reproducible (and the name of the temporary file written
    first does not leak in).
    """
    if not path.name.endswith(".gz"):
        return open(path, mode)
    if "r" in mode:
        return gzip.open(path, mode)
    from . import parallel_gzip

    return parallel_gzip.ParallelGzipWriter(path, level=GZIP_LEVEL, block_bytes=parallel_gzip.BLOCK_BYTES)


def parse_header(raw: bytes) -> dict[str, Any] | None:
    """Fields of a NIfTI-1 (``n+1``) or NIfTI-2 (``n+2``) single-file header, or None.

    Returns a dict with ``version`` (1 or 2), ``header_size``, ``endian`` ('<' or '>'),
    ``dim`` (8 ints), ``datatype``, ``bitpix``, ``pixdim`` (8 floats), ``vox_offset``,
    ``scl_slope``, ``scl_inter``, ``intent_code``, ``qform_code``, ``sform_code``,
    ``quatern`` (b, c, d), ``qoffset`` (RAS mm) and ``srow`` (12 floats, RAS mm).
    """
    for version, size in ((1, NIFTI1_HEADER_SIZE), (2, NIFTI2_HEADER_SIZE)):
        if len(raw) < size:
            continue
        for endian in "<>":
            if struct.unpack_from(endian + "i", raw, 0)[0] == size:
                break
        else:
            continue
        magic_ok = raw[344:347] in (b"n+1", b"ni1") if version == 1 else raw[4:12] == NIFTI2_MAGIC
        if not magic_ok:
            return None
        header: dict[str, Any] = {"version": version, "header_size": size, "endian": endian}
        for name, (offset, fmt) in _LAYOUT[version].items():
            values = struct.unpack_from(endian + fmt, raw, offset)
            header[name] = list(values) if name in _VECTOR_FIELDS else values[0]
        header["pair"] = version == 1 and raw[344:347] == b"ni1"
        return header
    return None


def read_extensions(handle: BinaryIO, raw: bytes, header: dict[str, Any]) -> list[tuple[int, bytes]]:
    """The (code, payload) extensions after the header; ``raw`` holds the bytes read so far."""
    start = header["header_size"]
    if len(raw) < start + 4 or raw[start] == 0 or header["pair"]:
        return []
    remaining = int(header["vox_offset"]) - start - 4
    if not 0 < remaining < 1 << 24:
        return []
    blob = raw[start + 4 :]
    blob += handle.read(max(remaining - len(blob), 0))
    blob = blob[:remaining]
    extensions, offset = [], 0
    while offset + 8 <= len(blob):
        size, code = struct.unpack_from(header["endian"] + "2i", blob, offset)
        if size < 8 or offset + size > len(blob):
            break
        extensions.append((code, blob[offset + 8 : offset + size]))
        offset += size
    return extensions


def data_shape(header: dict[str, Any]) -> tuple[int, ...]:
    """The declared extents (x fastest), ``dim[1 : dim[0] + 1]``, zero extents as 1."""
    n_dims = int(header["dim"][0])
    return tuple(max(int(s), 1) for s in header["dim"][1 : n_dims + 1])


def header_problem(header: dict[str, Any]) -> str | None:
    """What makes a header unusable, or None.

    Refused: a dimension count outside 1..7, an unknown datatype, bitpix that disagrees
    with the datatype, a spatial pixdim that is not finite and positive, a qform or
    sform (when its code says it is used) with non-finite numbers, a negative vox_offset.
    """
    n_dims = int(header["dim"][0])
    if not 1 <= n_dims <= 7:
        return f"invalid number of dimensions {n_dims} in the header"
    if any(int(s) < 0 for s in header["dim"][1 : n_dims + 1]):
        return f"negative size in dim {header['dim'][1 : n_dims + 1]}"
    datatype, bitpix = int(header["datatype"]), int(header["bitpix"])
    if datatype not in DATATYPES:
        return f"unknown datatype {datatype}"
    if DATATYPES[datatype][0] != bitpix:
        return (
            f"datatype {datatype} needs bitpix {DATATYPES[datatype][0]} but the header says bitpix {bitpix}; "
            "the header is inconsistent"
        )
    for axis in range(1, min(n_dims, 3) + 1):
        value = header["pixdim"][axis]
        if not math.isfinite(value) or value <= 0:
            return (
                f"pixdim[{axis}] = {value:g} is not a positive finite spacing"
                + (" (a negative one would flip the axis)" if value < 0 else "")
            )
    if header["qform_code"] > 0 and not all(map(math.isfinite, [*header["quatern"], *header["qoffset"], header["pixdim"][0]])):
        return f"the qform has non-finite numbers (quatern {header['quatern']}, qoffset {header['qoffset']})"
    if header["sform_code"] > 0 and not all(map(math.isfinite, header["srow"])):
        return f"the sform has non-finite numbers (srow {header['srow']})"
    if not math.isfinite(header["vox_offset"]) or header["vox_offset"] < 0:
        return f"invalid vox_offset {header['vox_offset']}"
    return None


def data_offset(header: dict[str, Any]) -> int:
    """Byte offset of the voxels: vox_offset, but never inside the header."""
    return max(int(header["vox_offset"]), header["header_size"] + 4)


def bytes_per_voxel(header: dict[str, Any]) -> float:
    """Bytes of one voxel from bitpix."""
    return int(header["bitpix"]) / 8
