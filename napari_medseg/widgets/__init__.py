"""napari side: the dock panel (the only package, with _reader/_writer/_sample_data, that imports Qt)."""

from .panel import MedSegPanel

__all__ = ["MedSegPanel"]
