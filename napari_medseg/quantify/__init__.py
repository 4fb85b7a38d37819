"""Quantification: volumes in mL, connected components (instances), Dice and HD95.

Plain numpy/scipy; no torch, no Qt. Label maps are (z, y, x) integer arrays whose value k
is ``class_names[k]``, with ``class_names[0]`` the background (as in model configs).
"""

from .components import connected_components, largest_component_fraction
from .metrics import dice, evaluate, hd95, surface_distances, volume_difference_ml
from .volumes import as_labels, asymmetry_indices, class_volumes_ml

__all__ = [
    "as_labels",
    "asymmetry_indices",
    "class_volumes_ml",
    "connected_components",
    "dice",
    "evaluate",
    "hd95",
    "largest_component_fraction",
    "surface_distances",
    "volume_difference_ml",
]
