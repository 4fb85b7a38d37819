"""napari writer contributions: Labels and Image layers with their source's geometry."""

from __future__ import annotations

from typing import Any

from .contributions.layers import source_volume_from_state


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """Write a Labels layer as uint8/uint16 with the layer's (source's) exact geometry."""
    return _write(path, data, meta, kind="labels")


def write_image(path: str, data: Any, meta: dict) -> list[str]:
    """Write an Image layer as float32 with the layer's (source's) exact geometry."""
    return _write(path, data, meta, kind="image")


def _write(path: str, data: Any, meta: dict, kind: str) -> list[str]:
    from .io import write_volume

    volume = source_volume_from_state(data, meta)
    if volume.array.ndim != 3:
        raise ValueError(f"layer data of shape {volume.array.shape} is not a 3D volume")
    return [str(write_volume(path, volume.array, volume, kind=kind))]
