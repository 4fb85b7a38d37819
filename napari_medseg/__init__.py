"""napari-medseg: deep-learning segmentation of medical volumes for napari and the command line.

Importing the package is cheap: torch, SimpleITK and Qt load only when a function that
needs them is first used.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "read_volume": ("napari_medseg.io", "read_volume"),
    "write_volume": ("napari_medseg.io", "write_volume"),
    "VolumeReadError": ("napari_medseg.io", "VolumeReadError"),
    "VolumeWriteError": ("napari_medseg.io", "VolumeWriteError"),
    "Volume": ("napari_medseg.types", "Volume"),
    "Geometry": ("napari_medseg.types", "Geometry"),
    "load_model": ("napari_medseg.models.catalog", "load_model"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attribute = _LAZY[name]
        value = getattr(import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'napari_medseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
