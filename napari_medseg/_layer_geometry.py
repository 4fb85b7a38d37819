"""Geometry <-> napari layer transforms (pure numpy; used by reader, writer and widgets).

A layer gets ``scale = spacing`` and ``translate = origin``; a non-identity direction goes
into ``affine`` as a rotation about the origin, so that napari's world coordinates of
every voxel equal the physical coordinates (z, y, x) of :class:`Geometry`:

    world = A @ (origin + spacing * index),  A(p) = D @ (p - origin) + origin
          = origin + D @ (spacing * index)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .types import Geometry


def layer_transform(geometry: Geometry) -> dict[str, Any]:
    """``scale``, ``translate`` and ``affine`` keyword arguments for a 3D napari layer."""
    direction = geometry.direction_matrix
    origin = np.asarray(geometry.origin)
    affine = np.eye(4)
    affine[:3, :3] = direction
    affine[:3, 3] = origin - direction @ origin
    return {"scale": tuple(geometry.spacing), "translate": tuple(geometry.origin), "affine": affine}


def geometry_from_layer(scale, translate, affine=None, rotate=None, shear=None) -> Geometry:
    """Geometry of the last three axes of a layer from its transform attributes.

    napari maps data to world as ``world = L @ (R @ (scale * index) + translate) + t`` for
    an affine with linear part L and translation t, so ``origin = L @ translate + t`` and
    ``direction = L @ R``. Sheared layers have no orthonormal direction and are refused.
    """
    scale = np.asarray(scale, dtype=np.float64)[-3:]
    translate = np.asarray(translate, dtype=np.float64)[-3:]
    matrix = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    linear = matrix[-4:-1, -4:-1]
    offset = matrix[-4:-1, -1]
    if rotate is not None:
        linear = linear @ np.asarray(rotate, dtype=np.float64)[-3:, -3:]
    if shear is not None and np.any(np.abs(np.asarray(shear, dtype=np.float64)) > 1e-12):
        raise ValueError(f"layer shear {list(shear)} cannot be stored as spacing, origin and direction")
    origin = linear @ translate + offset
    return Geometry(tuple(scale), tuple(origin), tuple(map(tuple, linear)))
