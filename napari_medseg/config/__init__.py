"""Configuration as data: :class:`ModelConfig`, saved as ``config.json`` beside a model's
weights (plain Python: no numpy, no torch), and the checks of its values."""

from .model_config import ModelConfig
from .values import DEFAULT_PALETTE, MAX_CLASSES, MAX_IN_CHANNELS, MAX_SLICE_MARGIN_MM

__all__ = ["DEFAULT_PALETTE", "MAX_CLASSES", "MAX_IN_CHANNELS", "MAX_SLICE_MARGIN_MM", "ModelConfig"]
