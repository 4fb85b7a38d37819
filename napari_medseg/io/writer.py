"""Write arrays with a source volume's exact geometry, atomically."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..types import Geometry, Volume
from . import nifti
from .sitk_images import image_from_array
from .errors import VolumeWriteError
from .reader import GEOMETRY_KEY

WRITABLE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def output_dtype(array: np.ndarray, kind: str = "auto") -> np.dtype:
    """uint8/uint16 for labels (integer or bool arrays), float32 for images."""
    if kind not in ("auto", "labels", "image"):
        raise ValueError(f"kind {kind!r} must be 'auto', 'labels' or 'image'")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or np.iscomplexobj(array):
        raise ValueError(f"arrays of dtype {array.dtype} cannot be written; use real numbers")
    is_labels = kind == "labels" or (
        kind == "auto" and (np.issubdtype(array.dtype, np.integer) or array.dtype == bool)
    )
    if not is_labels:
        return np.dtype(np.float32)
    if array.size == 0:
        return np.dtype(np.uint8)
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > np.iinfo(np.uint16).max:
        raise ValueError(f"label values {low}..{high} do not fit uint16 (0..65535)")
    return np.dtype(np.uint8 if high <= 255 else np.uint16)


def write_volume(
    path: str | Path,
    array: np.ndarray,
    like: Volume | Geometry,
    *,
    kind: str = "auto",
    nifti_version: int | None = None,
) -> Path:
    """Write ``array`` with the geometry of ``like``; the file appears complete or not at all.

    Args:
        path: destination ending in .nii.gz, .nii, .nrrd or .mha.
        array: (z, y, x) or (z, y, x, C) with the spatial shape of ``like``.
        like: the source volume (or just its geometry).
        kind: "labels" (stored as uint8/uint16), "image" (float32) or "auto" (labels
            for integer and bool arrays).
        nifti_version: 1 or 2 for NIfTI outputs; by default NIfTI-1 unless an extent
            exceeds 32767, which only NIfTI-2 can store.

    Returns:
        The path written.
    """
    path = Path(path)
    name = path.name.lower()
    if not name.endswith(WRITABLE_SUFFIXES):
        raise VolumeWriteError(path, f"unsupported output type; use one of {', '.join(WRITABLE_SUFFIXES)}")
    geometry = like.geometry if isinstance(like, Volume) else like
    if isinstance(like, Volume) and tuple(array.shape[:3]) != like.shape:
        raise VolumeWriteError(path, f"array shape {array.shape} does not match the source grid {like.shape}")
    if array.ndim not in (3, 4):
        raise VolumeWriteError(path, f"array of shape {array.shape} must be (z, y, x) or (z, y, x, C)")
    try:
        dtype = output_dtype(array, kind)
    except ValueError as exc:
        raise VolumeWriteError(path, str(exc)) from exc
    # Converted only when the dtype changes (labels): the NIfTI writer reads any layout,
    # block by block, so large probabilities (possibly a memmap) are never copied whole.
    data = array if array.dtype == dtype else array.astype(dtype)
    if not path.parent.exists():
        raise VolumeWriteError(path, f"folder {path.parent} does not exist")

    suffix = next(s for s in WRITABLE_SUFFIXES if name.endswith(s))
    # Same folder (so the rename is atomic), same suffix (ITK picks its writer by it).
    temporary = str(path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.part{suffix}")
    try:
        if suffix in (".nii", ".nii.gz"):
            nifti.write_nifti(
                temporary, data, geometry, _source_nifti_fields(like, geometry), version=nifti_version
            )
        else:
            image = image_from_array(np.ascontiguousarray(data), geometry)
            image.SetMetaData(GEOMETRY_KEY, _geometry_json(geometry))
            sitk.WriteImage(image, temporary, useCompression=True)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _source_nifti_fields(like: Volume | Geometry, geometry: Geometry) -> dict | None:
    """The source file's NIfTI geometry fields, if the grid is still the source's."""
    if not isinstance(like, Volume):
        return None
    fields = like.meta.get("nifti_fields")
    if fields and like.meta.get("nifti_fields_geometry") == geometry:
        return fields
    return None


def _geometry_json(geometry: Geometry) -> str:
    return json.dumps(
        {
            "spacing": list(geometry.spacing),
            "origin": list(geometry.origin),
            "direction": [list(row) for row in geometry.direction],
        }
    )
