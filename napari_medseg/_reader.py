"""napari reader contribution: NIfTI, NRRD, MHA/MHD, DICOM files and folders, DICOM SEG."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .io.dicom import looks_like_dicom

_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".dicom", ".ima")
_FOLDER_PROBE = 64  # files inspected before deciding a folder is not ours


def napari_get_reader(path: str | list[str]) -> Callable | None:
    """Return :func:`read_layers` if ``path`` is something this plugin reads, else None."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(_handles(Path(p)) for p in paths):
        return None
    return read_layers


def _handles(path: Path) -> bool:
    if path.is_dir():
        return _folder_is_ours(path)
    name = path.name.lower()
    if name.endswith(_SUFFIXES):
        return True
    return path.is_file() and "." not in path.name and looks_like_dicom(path)


def _folder_is_ours(folder: Path) -> bool:
    """Empty folders (to say so clearly) and folders with DICOM-looking files."""
    seen = 0
    for root, _, files in os.walk(folder):
        for name in files:
            if looks_like_dicom(Path(root) / name):
                return True
            seen += 1
            if seen >= _FOLDER_PROBE:
                return False
    return seen == 0


def read_layers(path: str | list[str]) -> list[tuple]:
    """Read each path into layers: an image, or a Labels layer for a DICOM SEG; a DICOM
    folder also gives the SEGs in it that reference its series, on the series' grid.
    Errors name the file and the problem."""
    from .contributions.layers import image_layer_data, segmentation_layer_data
    from .io import read_volume
    from .io.dicom_seg import read_series_with_segs

    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers = []
    for item in paths:
        volumes = read_series_with_segs(item) if Path(item).is_dir() else [read_volume(item)]
        image_name = None
        for volume in volumes:
            if volume.meta.get("format") == "dicom-seg":
                data = segmentation_layer_data(volume)
                if image_name is not None:
                    data[1]["metadata"]["medseg"]["image_layer"] = image_name
            else:
                data = image_layer_data(volume)
                image_name = data[1]["name"]
            _notify(data[1]["metadata"]["medseg"]["warnings"], data[1]["name"])
            layers.append(data)
    return layers


def _notify(warnings: list[str], name: str) -> None:
    if not warnings:
        return
    from napari.utils.notifications import show_warning

    for warning in warnings:
        show_warning(f"{name}: {warning}")
