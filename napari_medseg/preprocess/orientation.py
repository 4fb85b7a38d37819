"""Exact reorientation by axis permutation and flips (no interpolation).

Orientation codes follow SimpleITK's ``DICOMOrient`` convention: three letters naming the
anatomical direction (L/R, P/A, S/I) toward which the x, y and z index axes increase,
i.e. the array's last, middle and first axis. Physical coordinates are LPS.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

import numpy as np

from ..types import Geometry, Volume

# LPS unit vectors (x, y, z) for each letter.
_LETTER_XYZ = {
    "L": (1, 0, 0),
    "R": (-1, 0, 0),
    "P": (0, 1, 0),
    "A": (0, -1, 0),
    "S": (0, 0, 1),
    "I": (0, 0, -1),
}


def _code_directions_zyx(code: str) -> np.ndarray:
    """(3, 3) matrix whose column a is the physical (z, y, x) direction of array axis a."""
    code = code.upper()
    if len(code) != 3 or any(letter not in _LETTER_XYZ for letter in code):
        raise ValueError(f"orientation code {code!r} must be 3 letters from L/R, P/A, S/I")
    columns = [np.array(_LETTER_XYZ[code[2 - axis]], dtype=float)[::-1] for axis in range(3)]
    matrix = np.stack(columns, axis=1)
    if abs(np.linalg.det(matrix)) < 0.5:
        raise ValueError(f"orientation code {code!r} repeats an axis")
    return matrix


def orientation_code(geometry: Geometry) -> str:
    """The closest orientation code of a (possibly oblique) geometry."""
    direction = geometry.direction_matrix
    letters = []
    for axis in (2, 1, 0):  # x, y, z
        column_xyz = direction[::-1, axis]
        dominant = int(np.argmax(np.abs(column_xyz)))
        sign = np.sign(column_xyz[dominant])
        letters.append({(0, 1): "L", (0, -1): "R", (1, 1): "P", (1, -1): "A", (2, 1): "S", (2, -1): "I"}[(dominant, sign)])
    return "".join(letters)


@dataclass(frozen=True)
class Reorientation:
    """Array axis ``a`` of the result is input axis ``permutation[a]``, flipped where ``flips[a]``."""

    permutation: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    @property
    def is_identity(self) -> bool:
        return self.permutation == (0, 1, 2) and not any(self.flips)

    def apply(self, array: np.ndarray, channel_axis: int | None = None) -> np.ndarray:
        """Input layout -> canonical layout; ``channel_axis`` (0 or -1) is left alone."""
        axes = self._axes(array.ndim, channel_axis, self.permutation)
        out = np.transpose(array, axes)
        return self._flip(out, channel_axis)

    def invert(self, array: np.ndarray, channel_axis: int | None = None) -> np.ndarray:
        """Canonical layout -> input layout (exact inverse of :meth:`apply`)."""
        out = self._flip(array, channel_axis)
        inverse = tuple(int(i) for i in np.argsort(self.permutation))
        return np.transpose(out, self._axes(array.ndim, channel_axis, inverse))

    def _axes(self, ndim: int, channel_axis: int | None, spatial: tuple[int, ...]) -> tuple[int, ...]:
        if channel_axis is None:
            return tuple(spatial)
        if channel_axis == 0:
            return (0, *(a + 1 for a in spatial))
        if channel_axis in (-1, ndim - 1):
            return (*spatial, ndim - 1)
        raise ValueError(f"channel_axis {channel_axis} must be 0, -1 or None")

    def _flip(self, array: np.ndarray, channel_axis: int | None) -> np.ndarray:
        offset = 1 if channel_axis == 0 else 0
        flip_axes = tuple(a + offset for a, flipped in enumerate(self.flips) if flipped)
        return np.flip(array, axis=flip_axes) if flip_axes else array


def reorient(volume: Volume, code: str) -> tuple[Volume, Reorientation]:
    """Permute/flip ``volume`` so its axes point as close as possible to ``code``.

    The result has exactly the same voxels at the same physical positions; only the
    array layout and the geometry's description change. Residual obliquity is kept.
    """
    target = _code_directions_zyx(code)
    direction = volume.geometry.direction_matrix
    best = max(
        permutations(range(3)),
        key=lambda perm: sum(abs(direction[:, perm[a]] @ target[:, a]) for a in range(3)),
    )
    flips = tuple(bool(direction[:, best[a]] @ target[:, a] < 0) for a in range(3))
    transform = Reorientation(permutation=tuple(best), flips=flips)  # type: ignore[arg-type]
    if transform.is_identity:
        return volume, transform

    shape = volume.shape
    spacing = tuple(volume.spacing[best[a]] for a in range(3))
    columns = [direction[:, best[a]] * (-1.0 if flips[a] else 1.0) for a in range(3)]
    first_voxel = [0, 0, 0]
    for a in range(3):
        if flips[a]:
            first_voxel[best[a]] = shape[best[a]] - 1
    origin = tuple(volume.geometry.index_to_physical(first_voxel)[0])
    geometry = Geometry(spacing, origin, np.stack(columns, axis=1))
    channel_axis = -1 if volume.array.ndim == 4 else None
    array = transform.apply(volume.array, channel_axis)
    return Volume(array=array, geometry=geometry, modality=volume.modality, meta=dict(volume.meta)), transform
