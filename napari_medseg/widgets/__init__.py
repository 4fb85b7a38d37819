"""napari side: the dock panel (the only package, with the napari contributions, that imports Qt)."""

from .panel import MedSegPanel

__all__ = ["MedSegPanel"]
