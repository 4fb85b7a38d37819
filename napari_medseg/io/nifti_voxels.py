"""NIfTI voxels that SimpleITK cannot give us: NIfTI-2 files, and NaN/Inf values.

SimpleITK reads NIfTI-1 only, and turns NaN and +-Inf voxels into 0 without a word.
NIfTI-2 files are decoded here with numpy (geometry from the header, the same rules
ITK applies to NIfTI-1); for NIfTI-1 floats the non-finite voxels are found in the
raw stream so the reader can handle them as it does for every other format.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..types import Geometry
from .nifti_header import DATATYPES, data_offset, data_shape, open_maybe_gzip

_CHUNK_BYTES = 1 << 22
# ITK reads NIfTI in LPS: physical_lps = FLIP @ physical_ras (x and y negated).
_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class NonFinite:
    """Non-finite voxels of the first volume of one component, as scaled values.

    Attributes:
        component: the vector component (0 for scalar images).
        flat_index: C-order indices into the (z, y, x) grid.
        values: the scaled voxel values there (NaN, +Inf or -Inf).
    """

    component: int
    flat_index: np.ndarray
    values: np.ndarray


def _dtype(header: dict[str, Any]) -> np.dtype:
    name = DATATYPES[int(header["datatype"])][1]
    if name is None:
        raise ValueError(f"NIfTI datatype {header['datatype']} is not supported")
    return np.dtype(header["endian"] + name)


def _scaling(header: dict[str, Any]) -> tuple[float, float] | None:
    """(slope, intercept) when the header asks for scaling (slope not 0 and not 1/0)."""
    slope, inter = float(header["scl_slope"]), float(header["scl_inter"])
    if slope == 0 or not math.isfinite(slope) or (slope == 1 and inter == 0):
        return None
    return slope, inter if math.isfinite(inter) else 0.0


def _grid(header: dict[str, Any]) -> tuple[int, int, int, int, int]:
    """(nx, ny, nz, nt, nc): the spatial grid, volumes and vector components."""
    shape = data_shape(header) + (1,) * 5
    return shape[0], shape[1], shape[2], shape[3], shape[4]


def find_non_finite(path: Path, header: dict[str, Any]) -> list[NonFinite]:
    """Non-finite voxels of the first volume of every component of a float NIfTI.

    Streams the file in 4 MiB chunks; memory grows only with the number of bad voxels.
    Returns an empty list for integer data or when every voxel is finite.
    """
    dtype = _dtype(header)
    if dtype.kind != "f":
        return []
    nx, ny, nz, nt, nc = _grid(header)
    n_grid = nx * ny * nz
    total = n_grid * nt * nc
    found: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    chunk_voxels = max(_CHUNK_BYTES // dtype.itemsize, 1)
    with open_maybe_gzip(path, "rb") as handle:
        handle.seek(data_offset(header))
        start = 0
        while start < total:
            count = min(chunk_voxels, total - start)
            chunk = np.frombuffer(handle.read(count * dtype.itemsize), dtype=dtype)
            bad = np.flatnonzero(~np.isfinite(chunk))
            if bad.size:
                index = bad + start
                block = index // n_grid  # = t + nt * component
                keep = block % nt == 0
                for component in np.unique(block[keep] // nt):
                    chosen = keep & (block // nt == component)
                    found.setdefault(int(component), []).append((index[chosen] % n_grid, chunk[bad[chosen]]))
            if chunk.size < count:
                break
            start += count
    scaling = _scaling(header)
    result = []
    for component, parts in sorted(found.items()):
        values = np.concatenate([v for _, v in parts]).astype(np.float64)
        if scaling:
            values = values * scaling[0] + scaling[1]
        result.append(NonFinite(component, np.concatenate([i for i, _ in parts]), values))
    return result


def restore_non_finite(array: np.ndarray, found: list[NonFinite]) -> np.ndarray:
    """Put the non-finite values back into a (z, y, x) or (z, y, x, C) float array, in place."""
    for item in found:
        if array.ndim == 3 and item.component != 0:
            continue
        target = array if array.ndim == 3 else array[..., item.component]
        index = np.unravel_index(item.flat_index, target.shape)
        target[index] = item.values.astype(array.dtype)
    return array


def read_voxels(path: Path, header: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
    """The first volume of a NIfTI file as (z, y, x) or (z, y, x, C), scaled; and notes.

    Used for NIfTI-2, which SimpleITK cannot read. The data size was checked before.
    """
    dtype = _dtype(header)
    nx, ny, nz, nt, nc = _grid(header)
    notes = [f"4D image with {nt} volumes: only the first is read"] if nt > 1 else []
    if len(data_shape(header)) > 5:
        notes.append(f"dimensions beyond the 5th ({data_shape(header)[5:]}) ignored: only the first is read")
    n_grid = nx * ny * nz
    blocks = []
    with open_maybe_gzip(path, "rb") as handle:
        handle.seek(data_offset(header))
        for component in range(nc):
            if component:
                handle.seek(data_offset(header) + component * nt * n_grid * dtype.itemsize)
            blob = handle.read(n_grid * dtype.itemsize)
            if len(blob) < n_grid * dtype.itemsize:
                raise ValueError(f"the file holds {len(blob)} bytes of a volume that needs {n_grid * dtype.itemsize}")
            blocks.append(np.frombuffer(blob, dtype=dtype).reshape(nz, ny, nx))
    array = blocks[0] if nc == 1 else np.stack(blocks, axis=-1)
    array = array.astype(dtype.newbyteorder("="), copy=True)
    scaling = _scaling(header)
    if scaling:
        array = array.astype(np.float64 if dtype.itemsize == 8 and dtype.kind == "f" else np.float32)
        array *= scaling[0]
        array += scaling[1]
    return array, notes


def geometry_from_header(header: dict[str, Any]) -> Geometry:
    """The (z, y, x) LPS geometry a NIfTI header declares.

    The sform when its code is set and its columns are orthogonal, else the qform when
    its code is set, else pixdim alone with the identity direction; the rules ITK applies
    to NIfTI-1 (checked against it in the tests).
    """
    spacing = np.array(header["pixdim"][1:4], dtype=np.float64)
    # without qform and sform ITK takes the identity direction in its own (LPS) space
    direction_xyz, origin_xyz = np.eye(3), np.zeros(3)
    sform = _sform(header) if header["sform_code"] > 0 else None
    if sform is not None:
        rotation, spacing, origin = sform
        direction_xyz, origin_xyz = _LPS_FROM_RAS @ rotation, _LPS_FROM_RAS @ origin
    elif header["qform_code"] > 0:
        rotation, origin = _qform_rotation(header), np.array(header["qoffset"], dtype=np.float64)
        direction_xyz, origin_xyz = _LPS_FROM_RAS @ rotation, _LPS_FROM_RAS @ origin
    return Geometry(
        spacing=tuple(spacing[::-1]),
        origin=tuple(origin_xyz[::-1]),
        direction=tuple(map(tuple, direction_xyz[::-1, ::-1])),
    )


def _sform(header: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    matrix = np.array(header["srow"], dtype=np.float64).reshape(3, 4)
    spacing = np.linalg.norm(matrix[:, :3], axis=0)
    if np.any(spacing <= 0):
        return None
    rotation = matrix[:, :3] / spacing
    if np.abs(rotation.T @ rotation - np.eye(3)).max() > 1e-4:
        return None
    return rotation, spacing, matrix[:, 3]


def _qform_rotation(header: dict[str, Any]) -> np.ndarray:
    """nifti1_io's quaternion-to-matrix, with qfac from pixdim[0]."""
    b, c, d = (float(v) for v in header["quatern"])
    a = 1.0 - (b * b + c * c + d * d)
    if a < 1e-7:
        norm = 1.0 / math.sqrt(b * b + c * c + d * d)
        a, b, c, d = 0.0, b * norm, c * norm, d * norm
    else:
        a = math.sqrt(a)
    rotation = np.array(
        [
            [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
            [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
            [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
        ]
    )
    if header["pixdim"][0] < 0:
        rotation[:, 2] = -rotation[:, 2]
    return rotation
