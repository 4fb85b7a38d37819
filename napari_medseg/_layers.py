"""Volumes as napari layer-data tuples, and back (no napari import needed)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import checks
from ._layer_geometry import geometry_from_layer, layer_transform
from .types import Geometry, Volume

METADATA_KEY = "medseg"


def volume_name(volume: Volume) -> str:
    """A layer name from the source path: file stem without .nii/.gz, or folder name."""
    from .io.reader import volume_stem

    return volume_stem(volume.meta.get("source", "volume"))


def layer_metadata(volume: Volume) -> dict[str, Any]:
    """What a layer keeps about its source: geometry, modality, warnings, header fields."""
    keep = {k: v for k, v in volume.meta.items() if k in ("source", "format", "series_uid", "series")}
    return {
        METADATA_KEY: {
            "geometry": volume.geometry,
            "modality": volume.modality,
            "warnings": checks.sanity_warnings(volume),
            "nifti_fields": volume.meta.get("nifti_fields"),
            "nifti_fields_geometry": volume.meta.get("nifti_fields_geometry"),
            **keep,
        }
    }


def image_layer_data(volume: Volume, name: str | None = None) -> tuple[np.ndarray, dict, str]:
    """(data, kwargs, "image") with world coordinates equal to physical (z, y, x) mm."""
    kwargs = {
        "name": name or volume_name(volume),
        "colormap": "gray",
        "contrast_limits": checks.contrast_limits(volume),
        "metadata": layer_metadata(volume),
        **layer_transform(volume.geometry),
    }
    return volume.array, kwargs, "image"


def segmentation_layer_data(volume: Volume, name: str | None = None) -> tuple[np.ndarray, dict, str]:
    """(data, kwargs, "labels") for a segmentation read from a file (a DICOM SEG): its
    segments' colours and names, on the volume's grid."""
    segments = sorted(volume.meta.get("segments", []), key=lambda s: s["number"])
    colors: dict[int | None, tuple[float, ...]] = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
    names = ["background"]
    for segment in segments:
        names += [f"segment {n}" for n in range(len(names), segment["number"])]  # gaps in the numbering
        names.append(segment["label"] or f"segment {segment['number']}")
        if segment.get("color") is not None:
            colors[segment["number"]] = (*(c / 255.0 for c in segment["color"]), 1.0)
    metadata = layer_metadata(volume)
    metadata[METADATA_KEY].update(
        warnings=volume.warnings, class_names=names, segments=segments,
        referenced_series_uid=volume.meta.get("referenced_series_uid"),
    )  # fmt: skip
    kwargs = {"name": name or volume_name(volume), "opacity": 0.5, "metadata": metadata, **layer_transform(volume.geometry)}
    if len(colors) > 2:
        kwargs["colormap"] = colors  # a mapping: napari makes it a direct label colormap
    return volume.array, kwargs, "labels"


def source_volume_from_state(data: np.ndarray, state: dict[str, Any]) -> Volume:
    """A volume (sharing ``data``) whose geometry is the layer's own transform.

    Header fields saved from the source file travel along only while the layer still
    sits on the source's grid, so a moved layer is written where it is displayed.
    """
    geometry = geometry_from_layer(
        state.get("scale", (1, 1, 1)),
        state.get("translate", (0, 0, 0)),
        state.get("affine"),
        state.get("rotate"),
        state.get("shear"),
    )
    stored = (state.get("metadata") or {}).get(METADATA_KEY, {})
    meta: dict[str, Any] = {}
    stored_geometry = stored.get("geometry")
    if isinstance(stored_geometry, Geometry) and _same_grid(stored_geometry, geometry):
        geometry = stored_geometry  # exact doubles instead of float round trips
        if stored.get("nifti_fields") is not None:
            meta["nifti_fields"] = stored["nifti_fields"]
            meta["nifti_fields_geometry"] = stored.get("nifti_fields_geometry")
    array = np.asarray(data)
    return Volume(array=array, geometry=geometry, modality=stored.get("modality", "unknown"), meta=meta)


def _same_grid(a: Geometry, b: Geometry, tolerance: float = 1e-9) -> bool:
    return bool(
        np.allclose(a.spacing, b.spacing, rtol=tolerance, atol=tolerance)
        and np.allclose(a.origin, b.origin, rtol=tolerance, atol=tolerance)
        and np.allclose(a.direction_matrix, b.direction_matrix, rtol=tolerance, atol=tolerance)
    )


def volume_from_layer(layer: Any) -> Volume:
    """The volume a napari layer shows, with geometry from the layer's transform."""
    state = {
        "scale": layer.scale,
        "translate": layer.translate,
        "affine": layer.affine.affine_matrix,
        "rotate": layer.rotate,
        "shear": layer.shear,
        "metadata": layer.metadata,
    }
    return source_volume_from_state(layer.data, state)
