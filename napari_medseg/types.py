"""The one geometry type and the volume that carries it.

Every array in the package is in (z, y, x) order and so is every geometric quantity
that describes it: ``spacing`` (mm), ``origin`` (mm, the physical position of voxel
(0, 0, 0)) and ``direction`` (3x3, column ``j`` is the physical unit vector along array
axis ``j``). Physical coordinates are SimpleITK's (LPS for medical files) written in
(z, y, x) order, so for an index ``i`` = (k, j, i):

    physical = origin + direction @ (spacing * index)

Only ``napari_medseg.io`` converts from SimpleITK's (x, y, z) convention.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

__all__ = ["Geometry", "Volume"]

_ORTHONORMAL_TOLERANCE = 1e-4
#: Two grids closer than this (relative; see :meth:`Geometry.differences`) are the same grid.
GRID_TOLERANCE = 1e-4


def _fmt(values) -> str:
    return str(np.round(np.asarray(values, dtype=np.float64), 6).tolist())


@dataclass(frozen=True)
class Geometry:
    """Spacing, origin and direction of a 3D grid, all in (z, y, x) order.

    Attributes:
        spacing: voxel size in mm along (z, y, x); each > 0.
        origin: physical position (mm) of voxel (0, 0, 0), as (z, y, x).
        direction: 3x3 tuple of rows; column j is the unit vector of array axis j.
    """

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[tuple[float, float, float], ...] = (
        (1.0, 0.0, 0.0),
        (0.0, 1.0, 0.0),
        (0.0, 0.0, 1.0),
    )

    def __post_init__(self) -> None:
        spacing = tuple(float(s) for s in self.spacing)
        origin = tuple(float(o) for o in self.origin)
        direction = tuple(tuple(float(v) for v in row) for row in self.direction)
        if len(spacing) != 3 or len(origin) != 3:
            raise ValueError(f"spacing {spacing} and origin {origin} must have 3 values each")
        if len(direction) != 3 or any(len(row) != 3 for row in direction):
            raise ValueError(f"direction {direction} must be a 3x3 matrix")
        if not all(np.isfinite(spacing)) or min(spacing) <= 0:
            raise ValueError(f"spacing {spacing} must be finite and positive")
        if not all(np.isfinite(origin)):
            raise ValueError(f"origin {origin} must be finite")
        matrix = np.asarray(direction)
        if not np.all(np.isfinite(matrix)):
            raise ValueError(f"direction {direction} must be finite")
        if np.abs(matrix.T @ matrix - np.eye(3)).max() > _ORTHONORMAL_TOLERANCE:
            raise ValueError(f"direction {direction} is not orthonormal")
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)

    def differences(self, other: "Geometry", tolerance: float = GRID_TOLERANCE) -> list[str]:
        """What differs between two grids beyond ``tolerance``, one phrase each (empty: the
        same grid). Spacing is compared relatively, the origin relative to its magnitude
        (at least 1 mm), the direction absolutely: float32 headers keep about 1e-7 of each."""
        problems = []
        if not np.allclose(self.spacing, other.spacing, rtol=tolerance, atol=0):
            problems.append(f"spacing (mm) {_fmt(self.spacing)} vs {_fmt(other.spacing)}")
        scale = max(1.0, *np.abs(self.origin), *np.abs(other.origin))
        if np.abs(np.subtract(self.origin, other.origin)).max() > tolerance * scale:
            problems.append(f"origin (mm) {_fmt(self.origin)} vs {_fmt(other.origin)}")
        if np.abs(self.direction_matrix - other.direction_matrix).max() > tolerance:
            problems.append(f"direction {_fmt(self.direction)} vs {_fmt(other.direction)}")
        return problems

    def matches(self, other: "Geometry", tolerance: float = GRID_TOLERANCE) -> bool:
        """Whether two grids are the same within ``tolerance`` (see :meth:`differences`)."""
        return not self.differences(other, tolerance)

    @property
    def direction_matrix(self) -> np.ndarray:
        """Direction as a (3, 3) float64 array (a copy)."""
        return np.array(self.direction, dtype=np.float64)

    @property
    def affine(self) -> np.ndarray:
        """(4, 4) matrix mapping homogeneous (z, y, x, 1) indices to physical mm."""
        out = np.eye(4)
        out[:3, :3] = self.direction_matrix * np.asarray(self.spacing)[None, :]
        out[:3, 3] = self.origin
        return out

    @property
    def is_oblique(self) -> bool:
        """True when the axes are not a signed permutation of the physical axes."""
        matrix = np.abs(self.direction_matrix)
        return bool(np.abs(matrix - np.round(matrix)).max() > 1e-6)

    @property
    def anisotropy(self) -> float:
        """Largest over smallest spacing (1.0 for isotropic voxels)."""
        return max(self.spacing) / min(self.spacing)

    def index_to_physical(self, index: np.ndarray) -> np.ndarray:
        """Map (N, 3) (z, y, x) voxel indices (may be fractional) to (N, 3) physical mm."""
        index = np.atleast_2d(np.asarray(index, dtype=np.float64))
        return index @ self.affine[:3, :3].T + np.asarray(self.origin)

    def physical_to_index(self, points: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`index_to_physical` for (N, 3) physical points."""
        points = np.atleast_2d(np.asarray(points, dtype=np.float64))
        return (points - np.asarray(self.origin)) @ np.linalg.inv(self.affine[:3, :3]).T

    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (1 mL = 1000 mm^3)."""
        return float(np.prod(self.spacing)) / 1000.0


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D array with its geometry.

    Attributes:
        array: (z, y, x) voxels, or (z, y, x, C) for multi-channel maps.
        geometry: spacing, origin and direction in (z, y, x) order.
        modality: "CT", "MR", ... or "unknown".
        meta: source path, DICOM series, warnings raised while reading, format details.
    """

    array: np.ndarray
    geometry: Geometry
    modality: str = "unknown"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array.ndim not in (3, 4):
            raise ValueError(f"array of shape {self.array.shape} must be (z, y, x) or (z, y, x, C)")

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape (z, y, x)."""
        return tuple(self.array.shape[:3])  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.geometry.spacing

    @property
    def origin(self) -> tuple[float, float, float]:
        return self.geometry.origin

    @property
    def direction(self) -> np.ndarray:
        return self.geometry.direction_matrix

    @property
    def warnings(self) -> list[str]:
        """Problems noticed while reading (NaNs replaced, extra components dropped, ...)."""
        return list(self.meta.get("warnings", []))

    def with_array(self, array: np.ndarray, **changes: Any) -> "Volume":
        """A new volume on the same grid; ``array`` must have the same spatial shape."""
        if tuple(array.shape[:3]) != self.shape:
            raise ValueError(f"array shape {array.shape} does not match the grid {self.shape}")
        return replace(self, array=array, **changes)
