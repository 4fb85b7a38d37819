"""DICOM checks made with pydicom before GDCM decodes anything.

GDCM allocates what Rows x Columns x NumberOfFrames declare and zero-fills what is
missing: a few-KB file claiming 65535 x 65535 pixels takes the machine down, and a
truncated file becomes a silently blank image. Each file's declared pixel size is
compared here with the pixel data it holds and with the memory available (through the
one size gate, :func:`.limits.check_allocation`), and a series is checked for members
that disagree (size, orientation) or coincide (two slices at one position).
"""

from __future__ import annotations

import math
import os
import stat
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import VolumeReadError
from .itk_headers import require_regular_file
from .limits import check_volume_allocation

_ITEM_TAG = (0xFFFE, 0xE000)
# Two slices closer than this along the normal (mm) are at the same position.
_SAME_POSITION_MM = 1e-3
_SAME_ORIENTATION = 1e-4


@dataclass(frozen=True)
class SliceHeader:
    """What one DICOM file declares about its pixels and where they lie.

    Attributes:
        path: the file.
        rows, columns, frames, samples: declared pixel grid and samples per pixel.
        bits_allocated: bits per stored sample.
        pixel_bytes: bytes of (native) pixel data present, or of encapsulated items.
        fragments: complete encapsulated fragments (None for native pixel data).
        orientation: ImageOrientationPatient (row then column cosines) or None.
        position: ImagePositionPatient (mm, LPS) or None.
        dataset: the pydicom dataset without its pixel data.
    """

    path: Path
    rows: int
    columns: int
    frames: int
    samples: int
    bits_allocated: int
    pixel_bytes: int
    fragments: int | None
    orientation: tuple[float, ...] | None
    position: tuple[float, ...] | None
    dataset: object


def read_slice_header(path: str | Path):
    """Header and pixel-data extent of one DICOM file (the whole file is read once).

    Returns a :class:`SliceHeader`, or None when the file holds no image (no Rows).

    Raises:
        VolumeReadError: not a regular file, or not readable as DICOM.
    """
    import pydicom

    path = Path(path)
    require_regular_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises several types for non-DICOM input
        raise VolumeReadError(path, f"not a readable DICOM file ({exc})") from exc
    if "Rows" not in ds or "Columns" not in ds:
        return None
    blob = ds.get("PixelData") or b""
    compressed = bool(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)) and getattr(
        ds.file_meta.TransferSyntaxUID, "is_compressed", False
    )
    if "PixelData" in ds:
        del ds.PixelData  # keep only the header around
    return SliceHeader(
        path=path,
        rows=_count(path, ds, "Rows"),
        columns=_count(path, ds, "Columns"),
        frames=_count(path, ds, "NumberOfFrames"),
        samples=_count(path, ds, "SamplesPerPixel"),
        bits_allocated=_count(path, ds, "BitsAllocated", default=16),
        pixel_bytes=len(blob),
        fragments=_count_fragments(blob) if compressed else None,
        orientation=_floats(ds.get("ImageOrientationPatient"), 6),
        position=_floats(ds.get("ImagePositionPatient"), 3),
        dataset=ds,
    )


def _count(path: Path, ds, attribute: str, default: int = 1) -> int:
    value = ds.get(attribute, default)
    try:
        number = int(value if value not in (None, "") else default)
    except (TypeError, ValueError) as exc:
        raise VolumeReadError(path, f"invalid {attribute} {value!r}") from exc
    if number <= 0:
        raise VolumeReadError(path, f"invalid {attribute} {number}: must be at least 1")
    return number


def _floats(value, n: int) -> tuple[float, ...] | None:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == n and all(map(math.isfinite, numbers)) else None


def _count_fragments(blob: bytes) -> int:
    """Complete items after the basic offset table; -1 when the last one is cut short."""
    offset, items = 0, 0
    while offset + 8 <= len(blob):
        group, element, length = struct.unpack_from("<HHI", blob, offset)
        if (group, element) != _ITEM_TAG:
            break
        if offset + 8 + length > len(blob):
            return -1
        items += 1
        offset += 8 + length
    return max(items - 1, 0)


def check_pixel_data(header: SliceHeader) -> None:
    """Refuse a file whose pixel data is shorter than declared, or too large to hold.

    Native pixel data must hold rows x columns x samples x frames x bits/8 bytes;
    encapsulated (compressed) data must hold at least one complete fragment per frame.
    """
    samples = header.samples
    photometric = str(header.dataset.get("PhotometricInterpretation", "")).upper()
    if header.fragments is None and photometric == "YBR_FULL_422":
        samples = 2  # native 4:2:2 stores two samples per pixel on average
    shape = (header.frames, header.rows, header.columns)
    bytes_per_pixel = samples * header.bits_allocated / 8
    if header.fragments is None:
        check_volume_allocation(header.path, shape, bytes_per_pixel, bytes_present=header.pixel_bytes)
        return
    if header.fragments < 0:
        raise VolumeReadError(header.path, "the compressed pixel data is cut short (its last fragment is incomplete)")
    if header.fragments < header.frames:
        raise VolumeReadError(
            header.path,
            f"NumberOfFrames is {header.frames} but the compressed pixel data holds {header.fragments} "
            "fragments; the header is corrupt or the data truncated",
        )
    check_volume_allocation(header.path, shape, bytes_per_pixel)


def check_series(folder: Path, headers: list[SliceHeader]) -> list[str]:
    """Refuse a series whose members disagree or coincide; warnings for what is odd.

    Every member must have the same Rows x Columns; no two may lie at the same position
    along the slice normal; mixed orientations are warned about by name. The whole stack
    goes through the size gate.
    """
    first = headers[0]
    for header in headers[1:]:
        if (header.rows, header.columns, header.samples) != (first.rows, first.columns, first.samples):
            raise VolumeReadError(
                folder,
                f"series members differ in size: {first.path.name} is {first.rows}x{first.columns}, "
                f"{header.path.name} is {header.rows}x{header.columns}",
            )
    check_volume_allocation(
        folder, (sum(h.frames for h in headers), first.rows, first.columns), first.samples * first.bits_allocated / 8
    )
    mixed = _check_orientations(headers)
    return mixed or _check_positions(folder, headers)


def _check_orientations(headers: list[SliceHeader]) -> list[str]:
    """A warning naming two members whose orientations differ (e.g. a scout series with
    axial and coronal planes): ITK stacks them on the first slice's geometry."""
    reference = next((h for h in headers if h.orientation is not None), None)
    for header in headers:
        if reference is None or header.orientation is None:
            continue
        if np.abs(np.subtract(header.orientation, reference.orientation)).max() > _SAME_ORIENTATION:
            return [
                f"the series mixes slice orientations ({reference.path.name} has {_rounded(reference.orientation)}, "
                f"{header.path.name} has {_rounded(header.orientation)}): the geometry is the first slice's and "
                "does not fit every slice; positions were not checked"
            ]
    return []


def _check_positions(folder: Path, headers: list[SliceHeader]) -> list[str]:
    placed = [h for h in headers if h.position is not None and h.orientation is not None]
    if len(placed) < 2:
        return []
    if len(placed) < len(headers):
        missing = [h.path.name for h in headers if h.position is None or h.orientation is None]
        return [f"{len(missing)} slices have no position or orientation ({', '.join(missing[:5])}): geometry may be wrong"]
    row, col = np.array(placed[0].orientation[:3]), np.array(placed[0].orientation[3:])
    normal = np.cross(row, col)
    along = np.array([np.dot(h.position, normal) for h in placed])
    order = np.argsort(along, kind="stable")
    gaps = np.diff(along[order])
    close = np.flatnonzero(gaps < _SAME_POSITION_MM)
    if close.size:
        a, b = placed[order[close[0]]], placed[order[close[0] + 1]]
        raise VolumeReadError(
            folder,
            f"{close.size} neighbouring slice pair(s) lie at the same position, e.g. {a.path.name} and "
            f"{b.path.name} at {along[order[close[0]]]:.4g} mm along the normal (a time series, several echoes "
            "or a duplicated slice); not a single volume",
        )
    return []


def _rounded(values) -> list[float]:
    return [round(float(v), 4) for v in values]


def inside_folder(root: Path, name: str | Path) -> bool:
    """True when ``name`` resolves (links followed) to a regular file under ``root``."""
    real, top = os.path.realpath(name), os.path.realpath(root)
    return os.path.commonpath([real, top]) == top and os.path.isfile(real)


def irregular_entries(root: Path) -> list[str]:
    """Entries under ``root`` that are not regular files inside it, as 'name (why)'.

    FIFOs, devices and sockets are never opened (a FIFO blocks the reader); links that
    resolve outside ``root`` are not followed.
    """
    found = []
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            relative = str(path.relative_to(root))
            if path.is_symlink() and not inside_folder(root, path):
                found.append(f"{relative} (a link out of the folder or to nothing)")
                continue
            try:
                mode = os.stat(path).st_mode
            except OSError:
                found.append(f"{relative} (cannot be read)")
                continue
            if not stat.S_ISREG(mode):
                found.append(f"{relative} (not a regular file)")
    return found
