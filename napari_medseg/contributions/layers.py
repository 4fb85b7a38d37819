"""Volumes as napari layer-data tuples, and back (no napari import needed)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..display import contrast_limits
from ..io.scan_checks import sanity_warnings
from .layer_geometry import display_axes, geometry_from_layer, inverse_axes, layer_transform, permute_geometry, permute_spatial
from ..types import Geometry, Volume

METADATA_KEY = "medseg"
#: Metadata entry: the source axes in the order the layer shows them (see layer_geometry).
DISPLAY_AXES_KEY = "display_axes"


def volume_name(volume: Volume) -> str:
    """A layer name from the source path: file stem without .nii/.gz, or folder name."""
    from ..io.reader import volume_stem

    return volume_stem(volume.meta.get("source", "volume"))


def layer_metadata(volume: Volume) -> dict[str, Any]:
    """What a layer keeps about its source: geometry, modality, warnings, header fields."""
    keep = {k: v for k, v in volume.meta.items() if k in ("source", "format", "series_uid", "series")}
    return {
        METADATA_KEY: {
            "geometry": volume.geometry,
            "modality": volume.modality,
            "warnings": sanity_warnings(volume),
            "nifti_fields": volume.meta.get("nifti_fields"),
            "nifti_fields_geometry": volume.meta.get("nifti_fields_geometry"),
            DISPLAY_AXES_KEY: list(display_axes(volume.geometry)),
            **keep,
        }
    }


def layer_axes(metadata: dict[str, Any] | None) -> tuple[int, int, int]:
    """The display axes recorded in a layer's metadata (identity when none)."""
    axes = ((metadata or {}).get(METADATA_KEY) or {}).get(DISPLAY_AXES_KEY)
    return (0, 1, 2) if axes is None else tuple(int(a) for a in axes)  # type: ignore[return-value]


def to_layer_layout(array: np.ndarray, metadata: dict[str, Any] | None) -> np.ndarray:
    """A (..., z, y, x) array on the source grid as the layer with ``metadata`` shows it (a view)."""
    return permute_spatial(array, layer_axes(metadata))


def from_layer_layout(array: np.ndarray, metadata: dict[str, Any] | None) -> np.ndarray:
    """A layer's (..., z, y, x) data back in the source's voxel order (a view)."""
    return permute_spatial(array, inverse_axes(layer_axes(metadata)))


def _displayed(volume: Volume) -> tuple[np.ndarray, dict[str, Any]]:
    axes = display_axes(volume.geometry)
    return permute_spatial(volume.array, axes), layer_transform(permute_geometry(volume.geometry, axes))


def image_layer_data(volume: Volume, name: str | None = None) -> tuple[np.ndarray, dict, str]:
    """(data, kwargs, "image") with world coordinates equal to physical (z, y, x) mm."""
    data, transform = _displayed(volume)
    kwargs = {
        "name": name or volume_name(volume),
        "colormap": "gray",
        "contrast_limits": contrast_limits(volume),
        "metadata": layer_metadata(volume),
        **transform,
    }
    return data, kwargs, "image"


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
    data, transform = _displayed(volume)
    kwargs = {"name": name or volume_name(volume), "opacity": 0.5, "metadata": metadata, **transform}
    if len(colors) > 2:
        kwargs["colormap"] = colors  # a mapping: napari makes it a direct label colormap
    return data, kwargs, "labels"


def source_volume_from_state(data: np.ndarray, state: dict[str, Any]) -> Volume:
    """A volume (sharing ``data``) whose geometry is the layer's own transform, in the
    source's voxel order.

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
    axes = layer_axes(state.get("metadata"))
    geometry = permute_geometry(geometry, inverse_axes(axes))
    data = from_layer_layout(data, state.get("metadata"))
    meta: dict[str, Any] = {}
    stored_geometry = stored.get("geometry")
    if isinstance(stored_geometry, Geometry) and stored_geometry.matches(geometry, tolerance=1e-9):
        geometry = stored_geometry  # exact doubles instead of float round trips
        if stored.get("nifti_fields") is not None:
            meta["nifti_fields"] = stored["nifti_fields"]
            meta["nifti_fields_geometry"] = stored.get("nifti_fields_geometry")
    array = np.asarray(data) if axes == (0, 1, 2) else np.ascontiguousarray(data)
    return Volume(array=array, geometry=geometry, modality=stored.get("modality", "unknown"), meta=meta)


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
