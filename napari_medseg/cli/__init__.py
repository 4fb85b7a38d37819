"""The ``medseg`` command line: the same core as the napari panel, headless."""

from .main import main

__all__ = ["main"]
