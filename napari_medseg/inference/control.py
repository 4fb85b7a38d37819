"""Re-export of :mod:`napari_medseg.control` for the inference layer."""

from ..control import Cancelled, ProgressCallback, StopCheck, check_stop, report

__all__ = ["Cancelled", "ProgressCallback", "StopCheck", "check_stop", "report"]
