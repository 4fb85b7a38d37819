"""Our own reading of MetaImage (.mha/.mhd) and NRRD (.nrrd/.nhdr) headers.

Both formats may name *other* files that hold the voxels (MetaImage ``ElementDataFile``,
NRRD ``data file``), and SimpleITK follows any name: an absolute path, ``..``, a link
out of the folder, a FIFO (which blocks forever). The header text is therefore parsed
here, before SimpleITK sees the file: a data file must be a plain regular file beside
its header, in the same folder; anything else is refused with the header and the name
it asked for. The same parse gives the declared size and the bytes present, for the
size gate in :mod:`.limits`.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import VolumeReadError
from .limits import DEFLATE_MAX_RATIO

# Headers are text of a few KB; a LIST of thousands of slice files still fits.
MAX_HEADER_BYTES = 1 << 20

_METAIMAGE_BYTES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
    "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}


@dataclass(frozen=True)
class DeclaredData:
    """What a header declares and what the files hold.

    Attributes:
        shape: declared extents as the header lists them (x fastest), voxels.
        bytes_per_voxel: bytes per voxel, all components together.
        bytes_present: bytes of (possibly encoded) voxel data found on disk, or None
            when no bound can be given (bzip2).
        max_expansion: decoded bytes one present byte may become (1 for raw data).
        data_files: the checked detached data files (empty when the data is inline).
    """

    shape: tuple[int, ...]
    bytes_per_voxel: float
    bytes_present: int | None
    max_expansion: float
    data_files: tuple[Path, ...] = ()


def require_regular_file(path: Path, named_by: Path | None = None) -> os.stat_result:
    """``os.stat`` of ``path``, refusing FIFOs, devices, sockets and folders.

    Checked before any ``open``: opening a FIFO blocks until a writer appears.
    """
    owner = named_by if named_by is not None else path
    try:
        info = os.stat(path)
    except OSError as exc:
        what = f"its data file {str(path)!r}" if named_by is not None else "the file"
        raise VolumeReadError(owner, f"{what} cannot be opened ({exc.strerror})") from exc
    if not stat.S_ISREG(info.st_mode):
        kind = _file_kind(info.st_mode)
        what = f"its data file {str(path)!r} is" if named_by is not None else "the path is"
        raise VolumeReadError(owner, f"{what} a {kind}, not a regular file; refused")
    return info


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device file"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISDIR(mode):
        return "folder"
    return "special file"


def safe_data_file(header: Path, name: str) -> tuple[Path, int]:
    """The data file ``name`` that ``header`` asks for, and its size in bytes.

    Only a plain regular file in the header's own folder is accepted: no absolute path,
    no folder part (so no ``..``), no link that resolves to another folder.

    Raises:
        VolumeReadError: naming the header and the path it asked for.
    """
    bad_name = (
        not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name or os.path.isabs(name)
    )
    if bad_name:
        raise VolumeReadError(
            header,
            f"its data file {name!r} is refused: a data file must be a plain file name beside the header "
            "(no absolute path, no folders, no '..')",
        )
    candidate = header.parent / name
    resolved = Path(os.path.realpath(candidate))
    if resolved.parent != Path(os.path.realpath(header.parent)):
        raise VolumeReadError(
            header, f"its data file {name!r} is a link to {str(resolved)!r}, outside the header's folder; refused"
        )
    info = require_regular_file(resolved, named_by=header)
    return resolved, info.st_size


def _read_head(path: Path) -> bytes:
    require_regular_file(path)
    with open(path, "rb") as handle:
        return handle.read(MAX_HEADER_BYTES)


# ---------------------------------------------------------------- MetaImage


def inspect_metaimage(path: Path) -> DeclaredData:
    """Parse a .mha/.mhd header; check its data files; declared size and bytes present."""
    head = _read_head(path)
    fields, data_offset, list_names = _metaimage_fields(path, head)
    shape = _ints(path, "DimSize", fields.get("DIMSIZE", ""))
    element = fields.get("ELEMENTTYPE", "").upper()
    if element not in _METAIMAGE_BYTES:
        raise VolumeReadError(path, f"unknown or missing ElementType {element!r}")
    channels = _ints(path, "ElementNumberOfChannels", fields.get("ELEMENTNUMBEROFCHANNELS", "1"))[0]
    compressed = fields.get("COMPRESSEDDATA", "false").lower() == "true"
    data_file = fields["ELEMENTDATAFILE"]
    files: tuple[Path, ...] = ()
    if data_file.upper() == "LOCAL":
        present = os.stat(path).st_size - data_offset
    else:
        names = list_names if data_file.upper().startswith("LIST") else _single_name(path, "ElementDataFile", data_file)
        checked = [safe_data_file(path, name) for name in names]
        files = tuple(p for p, _ in checked)
        present = sum(size for _, size in checked)
        skip = _ints(path, "HeaderSize", fields.get("HEADERSIZE", "0"), allow_negative=True)[0]
        present -= max(skip, 0) * len(checked)
    return DeclaredData(
        shape=shape,
        bytes_per_voxel=_METAIMAGE_BYTES[element] * channels,
        bytes_present=max(present, 0),
        max_expansion=DEFLATE_MAX_RATIO if compressed else 1,
        data_files=files,
    )


def _metaimage_fields(path: Path, head: bytes) -> tuple[dict[str, str], int, list[str]]:
    """Fields up to ElementDataFile (the last one), the byte offset after it, and the
    file names of a LIST form."""
    fields: dict[str, str] = {}
    offset = 0
    lines = head.split(b"\n")
    for index, raw in enumerate(lines):
        offset += len(raw) + 1
        key, sep, value = raw.decode("latin-1").partition("=")
        if not sep:
            continue
        key = key.strip().upper()
        fields[key] = value.strip()
        if key == "ELEMENTDATAFILE":
            names = []
            if fields[key].upper().startswith("LIST"):
                names = [line.decode("latin-1").strip() for line in lines[index + 1 :]]
                names = [name for name in names if name]
                if not names:
                    raise VolumeReadError(path, "ElementDataFile = LIST names no files")
            return fields, offset, names
    raise VolumeReadError(path, "not a valid MetaImage file (no ElementDataFile in its header)")


def _single_name(path: Path, field: str, value: str) -> list[str]:
    """A lone file name; the pattern form ('name%03d.raw 1 10 1') is refused."""
    if len(value.split()) > 1 or "%" in value:
        raise VolumeReadError(
            path, f"its {field} {value!r} is a file-name pattern; patterns cannot be checked and are refused"
        )
    return [value]


def _ints(path: Path, field: str, text: str, allow_negative: bool = False) -> tuple[int, ...]:
    try:
        values = tuple(int(float(v)) for v in text.split())
    except ValueError:
        values = ()
    if not values or (not allow_negative and any(v <= 0 for v in values)):
        raise VolumeReadError(path, f"invalid {field} {text!r} in the header")
    return values


# ---------------------------------------------------------------- NRRD


def inspect_nrrd(path: Path) -> DeclaredData:
    """Parse a .nrrd/.nhdr header; check its data files; declared size and bytes present."""
    head = _read_head(path)
    if not head.startswith(b"NRRD"):
        raise VolumeReadError(path, "not a valid NRRD file (no NRRD magic)")
    fields, header_end, list_names = _nrrd_fields(path, head)
    shape = _ints(path, "sizes", fields.get("sizes", ""))
    bytes_per_voxel = _nrrd_type_bytes(path, fields.get("type", ""), fields)
    encoding = fields.get("encoding", "raw").lower()
    data_file = fields.get("data file", fields.get("datafile"))
    files: tuple[Path, ...] = ()
    if data_file is None:
        present = os.stat(path).st_size - header_end
    else:
        if data_file.split()[:1] == ["LIST"]:
            names = list_names
        else:
            names = _single_name(path, "data file", data_file)
        checked = [safe_data_file(path, name) for name in names]
        files = tuple(p for p, _ in checked)
        present = sum(size for _, size in checked)
    skip = _ints(path, "byte skip", fields.get("byte skip", "0"), allow_negative=True)[0]
    if encoding == "raw" and skip > 0:
        present -= skip * max(len(files), 1)
    expansion = {"raw": 1, "gzip": DEFLATE_MAX_RATIO, "gz": DEFLATE_MAX_RATIO, "hex": 0.5}.get(encoding)
    if encoding in ("ascii", "text", "txt"):
        expansion = bytes_per_voxel  # at least one character per value
    return DeclaredData(
        shape=shape,
        bytes_per_voxel=bytes_per_voxel,
        bytes_present=None if expansion is None else max(present, 0),
        max_expansion=expansion or 1,
        data_files=files,
    )


def _nrrd_fields(path: Path, head: bytes) -> tuple[dict[str, str], int, list[str]]:
    """Fields (lower-case names), the offset of attached data, the names of a LIST."""
    fields: dict[str, str] = {}
    lines = head.split(b"\n")
    offset = len(lines[0]) + 1
    for index, raw in enumerate(lines[1:], start=1):
        offset += len(raw) + 1
        line = raw.decode("latin-1").rstrip("\r")
        if not line.strip():
            return fields, offset, []
        if line.startswith("#") or ":=" in line.split(": ", 1)[0]:
            continue
        key, sep, value = line.partition(": ")
        if not sep:
            raise VolumeReadError(path, f"not a valid NRRD header line {line[:80]!r}")
        key = key.strip().lower()
        fields[key] = value.strip()
        if key in ("data file", "datafile") and value.split()[:1] == ["LIST"]:
            # the file names run to the end of the header
            names = []
            for rest in lines[index + 1 :]:
                name = rest.decode("latin-1").strip()
                if not name:
                    break
                names.append(name)
            if not names:
                raise VolumeReadError(path, f"its {key} LIST names no files")
            return fields, len(head), names
    if len(head) >= MAX_HEADER_BYTES:
        raise VolumeReadError(path, f"the NRRD header is longer than {MAX_HEADER_BYTES} bytes")
    return fields, len(head), []


def _nrrd_type_bytes(path: Path, type_name: str, fields: dict[str, str]) -> int:
    name = type_name.lower()
    if name == "block":
        return _ints(path, "block size", fields.get("block size", fields.get("blocksize", "")))[0]
    for keys, size in (
        (("double",), 8),
        (("float",), 4),
        (("64", "long"), 8),
        (("16", "short"), 2),
        (("8", "char"), 1),  # before "int": uint8 is one byte
        (("32", "int"), 4),
    ):
        if any(key in name for key in keys):
            return size
    raise VolumeReadError(path, f"unknown or missing NRRD type {type_name!r}")
