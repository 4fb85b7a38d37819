"""The single place where SimpleITK's (x, y, z) convention meets our (z, y, x) one.

SimpleITK reports spacing and origin as (x, y, z) and the direction as a row-major
3x3 matrix whose column j is the physical direction of index axis j (x first), with
physical axes also ordered (x, y, z). Reversing both the physical axes and the index
axes gives ``direction_zyx = D[::-1, ::-1]``; ``GetArrayFromImage`` already returns
(z, y, x) arrays.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import SimpleITK as sitk

from ..types import Geometry


@contextmanager
def quiet_itk() -> Iterator[None]:
    """Silence ITK's console warnings for the duration; we report problems ourselves."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def geometry_from_sitk(image: sitk.Image) -> Geometry:
    """Geometry of a 3D SimpleITK image (or its first three axes) in (z, y, x) order."""
    dim = image.GetDimension()
    spacing = np.array(image.GetSpacing()[:3])
    origin = np.array(image.GetOrigin()[:3])
    direction = np.array(image.GetDirection()).reshape(dim, dim)[:3, :3]
    if dim == 2:
        raise ValueError("2D images must be made 3D before taking their geometry")
    return Geometry(
        spacing=tuple(spacing[::-1]),
        origin=tuple(origin[::-1]),
        direction=tuple(map(tuple, direction[::-1, ::-1])),
    )


def apply_geometry(image: sitk.Image, geometry: Geometry) -> sitk.Image:
    """Set ``geometry`` (z, y, x) on a 3D SimpleITK image, in place; returns it."""
    image.SetSpacing(tuple(reversed(geometry.spacing)))
    image.SetOrigin(tuple(reversed(geometry.origin)))
    image.SetDirection(tuple(geometry.direction_matrix[::-1, ::-1].ravel()))
    return image


def image_from_array(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """SimpleITK image from a (z, y, x) or (z, y, x, C) array with ``geometry``."""
    image = sitk.GetImageFromArray(array, isVector=array.ndim == 4)
    return apply_geometry(image, geometry)
