"""Map volumes into a model's canonical orientation, spacing and intensity range, and back."""

from .intensity import normalize_intensity
from .orientation import Reorientation, orientation_code, reorient
from .pipeline import Prepared, prepare, prepare_for_model
from .input_grid import argmax_labels, classes_last, restore, restore_into, zero_probabilities

__all__ = ["Prepared", "Reorientation", "argmax_labels", "classes_last", "normalize_intensity", "orientation_code", "prepare", "prepare_for_model",
           "reorient", "restore", "restore_into", "zero_probabilities"]
