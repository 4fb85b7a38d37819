"""One size gate for every array a file or a config asks us to build.

Headers declare sizes; a hostile or broken header can declare terabytes in a few bytes.
:func:`check_allocation` is called with the declared shape *before* anything is
allocated, by every reader (NIfTI, NRRD, MetaImage, DICOM file, series, multi-frame)
and by any other layer that builds a large array from numbers it was given
(resampling to a model grid, building a network from a config).
"""

from __future__ import annotations

import math
import mmap
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import VolumeReadError

# Fraction of available memory one array may take (it is copied at least once on its
# way to napari or a model).
MEMORY_FRACTION = 0.5
# Deflate (gzip, zlib) cannot expand data by more than about 1032:1.
DEFLATE_MAX_RATIO = 1032


class AllocationError(ValueError):
    """A declared array is larger than the data present or the memory available.

    Attributes:
        source: the file (or config) that declared the array.
        what: what the array is ("voxel data", "resampled volume", ...).
        shape: the declared shape.
        n_bytes: bytes the array would take.
    """

    def __init__(self, source: str | Path, what: str, shape: tuple[int, ...], n_bytes: int, problem: str) -> None:
        self.source = str(source)
        self.what = what
        self.shape = shape
        self.n_bytes = n_bytes
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")

    def __reduce__(self):
        # the default rebuilds from ``args`` (the message alone) and fails in another process
        return type(self), (self.source, self.what, self.shape, self.n_bytes, self.problem)


def available_memory_bytes() -> int:
    """Memory the process can still use (MemAvailable on Linux; physical pages otherwise)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 34


def format_shape(shape: Sequence[int]) -> str:
    """'512x512x300' for (512, 512, 300)."""
    return "x".join(str(int(s)) for s in shape)


def format_bytes(n_bytes: float) -> str:
    """Bytes in the largest fitting binary unit, e.g. '1.5 GiB' or '32 B'."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= size:
            return f"{n_bytes / size:.1f} {unit}"
    return f"{int(n_bytes)} B"


def check_allocation(
    what: str,
    shape: Sequence[int],
    bytes_per_voxel: float,
    source: str | Path,
    *,
    bytes_present: int | None = None,
    max_expansion: float = 1.0,
    memory_fraction: float = MEMORY_FRACTION,
) -> int:
    """Refuse an array before it is allocated when it cannot be real or cannot fit.

    Args:
        what: what the array holds, for the message ("voxel data", "resampled volume").
        shape: the declared shape, any number of axes, each a count >= 1.
        bytes_per_voxel: bytes per element (itemsize times components).
        source: the file or config that declared it, named in the message.
        bytes_present: bytes of data the source actually holds for this array, or None
            when nothing is read (resampling, building a network).
        max_expansion: how many declared bytes one present byte may become: 1 for raw
            data, :data:`DEFLATE_MAX_RATIO` for gzip, 0.5 for hex text.
        memory_fraction: share of the available memory one array may take.

    Returns:
        The number of bytes the array takes.

    Raises:
        AllocationError: a zero or negative extent, fewer bytes present than the shape
            needs, or more than ``memory_fraction`` of the available memory.
    """
    shape = tuple(int(s) for s in shape)
    if not shape or any(s <= 0 for s in shape):
        raise AllocationError(source, what, shape, 0, f"the {what} has an empty or negative size {shape}")
    n_voxels = 1
    for extent in shape:
        n_voxels *= extent  # Python ints: no overflow for absurd headers
    n_bytes = math.ceil(n_voxels * bytes_per_voxel)
    declared = f"{what} of {format_shape(shape)} voxels x {bytes_per_voxel:g} bytes ({format_bytes(n_bytes)})"
    reasons = []
    if bytes_present is not None and bytes_present * max_expansion < n_bytes:
        held = f"{bytes_present} bytes" if bytes_present < 1024 else format_bytes(bytes_present)
        if max_expansion != 1:
            held += f", at most {format_bytes(bytes_present * max_expansion)} once decoded"
        reasons.append(f"more than the file holds ({held})")
    available = available_memory_bytes()
    if n_bytes > memory_fraction * available:
        reasons.append(f"more than this machine can hold ({format_bytes(available)} available)")
    if reasons:
        raise AllocationError(
            source, what, shape, n_bytes,
            f"the {declared} is {' and '.join(reasons)}; the header is corrupt, the data truncated "
            "or the image too large",
        )
    return n_bytes


def check_volume_allocation(path: str | Path, shape: Sequence[int], bytes_per_voxel: float, **kwargs) -> int:
    """:func:`check_allocation` for a reader: the voxel data of ``path``, refused as a
    :class:`VolumeReadError` naming the file; keyword arguments as there."""
    try:
        return check_allocation("voxel data", shape, bytes_per_voxel, path, **kwargs)
    except AllocationError as exc:
        raise VolumeReadError(path, exc.problem) from exc


def release_pages(array: np.ndarray) -> None:
    """Drop a disk-backed ``numpy.memmap``'s pages from this process's resident memory
    (they are read back from the file when touched again); does nothing to an in-memory
    array.

    On Linux the changed pages are not written out here: dropping a shared file mapping's
    pages hands their changes to the page cache (as unmapping does), which writes them back
    in the background; a synchronous ``msync`` per slab made mapping a 33-class volume back
    wait seconds on the disk. Elsewhere they are flushed first.
    """
    handle = getattr(array, "_mmap", None) if isinstance(array, np.memmap) else None
    if handle is None:
        return
    if not (sys.platform.startswith("linux") and hasattr(mmap, "MADV_DONTNEED")):
        array.flush()
    if hasattr(handle, "madvise") and hasattr(mmap, "MADV_DONTNEED"):  # Linux, macOS
        handle.madvise(mmap.MADV_DONTNEED)


def release_heap() -> None:
    """Hand the C heap's free memory back to the system (glibc's ``malloc_trim``; nothing
    on other C libraries).

    glibc keeps freed blocks of up to 32 MiB in the process's heap for reuse: the network's
    per-batch activations are such blocks, and after it ran on a 600x512x512 CT they kept
    205 MB (0.65 times the scan) resident through every later stage. Called between the
    stages of a segmentation; it frees nothing that is in use.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return
    trim(0)
