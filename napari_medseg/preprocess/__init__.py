"""Map volumes into a model's canonical orientation, spacing and intensity range, and back."""

from .intensity import normalize_intensity
from .orientation import Reorientation, orientation_code, reorient
from .pipeline import Prepared, prepare, restore

__all__ = ["Prepared", "Reorientation", "normalize_intensity", "orientation_code", "prepare", "reorient", "restore"]
