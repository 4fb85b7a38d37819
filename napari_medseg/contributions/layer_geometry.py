"""Geometry <-> napari layer transforms (pure numpy; used by reader, writer and widgets).

A layer gets ``scale = spacing`` and ``translate = origin``; a non-identity direction goes
into ``affine`` as a rotation about the origin, so that napari's world coordinates of
every voxel equal the physical coordinates (z, y, x) of :class:`Geometry`:

    world = A @ (origin + spacing * index),  A(p) = D @ (p - origin) + origin
          = origin + D @ (spacing * index)

napari slices a layer along its own array axes, so a layer whose axes are permuted
against the world (a sagittal or coronal acquisition, FreeSurfer's LIA) cannot be shown
in 2D: the displayed block of its affine is singular. Such a layer shows a transposed
view of the array (:func:`display_axes`, no copy) whose axes follow the world's; the
permutation is recorded in the layer's metadata and undone whenever a volume is taken
back from a layer, so files and results keep the source's voxel order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..types import Geometry


def layer_transform(geometry: Geometry) -> dict[str, Any]:
    """``scale``, ``translate`` and ``affine`` keyword arguments for a 3D napari layer."""
    direction = geometry.direction_matrix
    origin = np.asarray(geometry.origin)
    affine = np.eye(4)
    affine[:3, :3] = direction
    affine[:3, 3] = origin - direction @ origin
    return {"scale": tuple(geometry.spacing), "translate": tuple(geometry.origin), "affine": affine}


def display_axes(geometry: Geometry) -> tuple[int, int, int]:
    """The source axes in the order that follows the world's (z, y, x): display axis ``w``
    is source axis ``axes[w]``. The identity unless the direction permutes the axes (an
    oblique grid near 45 degrees, with no clear order, stays as it is)."""
    world_of_axis = np.argmax(np.abs(geometry.direction_matrix), axis=0)
    if sorted(world_of_axis.tolist()) != [0, 1, 2]:
        return (0, 1, 2)
    return tuple(int(np.flatnonzero(world_of_axis == w)[0]) for w in range(3))  # type: ignore[return-value]


def permute_geometry(geometry: Geometry, axes) -> Geometry:
    """The same grid with its array axes taken in the order ``axes`` (exact: only the
    spacing and the direction's columns are reordered; the origin is voxel (0, 0, 0) in
    either order)."""
    axes = [int(a) for a in axes]
    spacing = tuple(geometry.spacing[a] for a in axes)
    direction = tuple(tuple(row[a] for a in axes) for row in geometry.direction)
    return Geometry(spacing, geometry.origin, direction)  # type: ignore[arg-type]


def permute_spatial(array, axes):
    """``array`` (a view) with its last three axes taken in the order ``axes``; leading
    axes (time, channel in napari's order) stay in front."""
    axes = [int(a) for a in axes]
    if axes == [0, 1, 2]:
        return array
    lead = array.ndim - 3
    return np.transpose(array, [*range(lead), *(lead + a for a in axes)])


def inverse_axes(axes) -> tuple[int, int, int]:
    return tuple(int(a) for a in np.argsort([int(a) for a in axes]))  # type: ignore[return-value]


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
