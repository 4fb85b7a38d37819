"""Checks and conversions of the values a model configuration holds (plain Python)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

# Reserved: these come from the config's own fields, never from ``arch_kwargs``.
RESERVED_ARCH_KWARGS = ("spatial_dims", "in_channels", "out_channels")

#: Colours given to classes 1, 2, ... when a config names no colours (background is transparent).
DEFAULT_PALETTE = (
    "#e6194bff", "#3cb44bff", "#ffe119ff", "#4363d8ff", "#f58231ff", "#911eb4ff",
    "#46f0f0ff", "#f032e6ff", "#bcf60cff", "#fabebeff", "#008080ff", "#e6beffff",
)  # fmt: skip
BACKGROUND_COLOR = "#00000000"
HEX_COLOR = re.compile(r"^#(?:[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$")
MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*$")
ORIENTATION_PAIRS = ("LR", "PA", "SI")

# Ranges of the sizes a config sets, wide enough for any medical model (2.5D slabs, multi-
# contrast input, whole-body class lists, micro-CT to whole-body spacings); beyond them a
# config would only build arrays no machine holds, so it is refused before anything is built.
MAX_IN_CHANNELS = 1024
MAX_CLASSES = 1024
#: Largest ``extra["slice_margin_mm"]`` a bundle may ask for (a whole head's width).
MAX_SLICE_MARGIN_MM = 256
TARGET_SPACING_RANGE_MM = (0.01, 100.0)
MAX_PATCH_EXTENT = 4096


def freeze(value: Any, where: str) -> Any:
    """A read-only, JSON-compatible copy: mappings become mapping proxies, lists tuples."""
    if isinstance(value, Mapping):
        frozen = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where} key {key!r} must be a string")
            frozen[key] = freeze(item, f"{where}[{key!r}]")
        return MappingProxyType(frozen)
    if isinstance(value, (list, tuple)):
        return tuple(freeze(item, f"{where}[{i}]") for i, item in enumerate(value))
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} value {value!r} must be finite")
        return value
    raise ValueError(f"{where} value {value!r} of type {type(value).__name__} is not JSON data")


def thaw(value: Any) -> Any:
    """Plain dicts and lists again, ready for ``json.dumps``."""
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [thaw(item) for item in value]
    return value


def as_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} {value!r} must be an integer")
    try:
        return int(value.__index__())
    except (AttributeError, TypeError):
        raise ValueError(f"{name} {value!r} must be an integer") from None


def as_str(name: str, value: Any, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise ValueError(f"{name} {value!r} must be a non-empty string")
    return value


def as_tuple(name: str, value: Any) -> tuple:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{name} {value!r} must be a sequence")
    return tuple(value)


def check_color(index: int, color: Any) -> Any:
    if isinstance(color, str):
        if not HEX_COLOR.match(color):
            raise ValueError(f"class_colors[{index}] {color!r} must be '#rrggbb' or '#rrggbbaa'")
        return color
    try:
        rgba = tuple(float(c) for c in color)
    except (TypeError, ValueError):
        raise ValueError(f"class_colors[{index}] {color!r} must be a hex string or RGBA") from None
    if len(rgba) != 4 or not all(0.0 <= c <= 1.0 for c in rgba):
        raise ValueError(f"class_colors[{index}] {color!r} must be 4 floats in [0, 1]")
    return rgba


def hex_to_rgba(color: str) -> tuple[float, float, float, float]:
    digits = color[1:] + ("ff" if len(color) == 7 else "")
    r, g, b, a = (int(digits[i : i + 2], 16) / 255.0 for i in range(0, 8, 2))
    return (r, g, b, a)
