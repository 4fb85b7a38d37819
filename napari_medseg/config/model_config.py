"""Configuration as data: the frozen dataclass saved as ``config.json`` beside a model's weights.

A :class:`ModelConfig` says which architecture to build (a key of the model registry, never
a dotted import path), with which keyword arguments, and how the model expects its input:
orientation, spacing, intensity normalisation, patch size. It is plain data (no numpy, no
torch) so that it can be read, validated and listed without loading a deep-learning stack.

Example:
    >>> cfg = ModelConfig(architecture="unet", spatial_dims=2, in_channels=3,
    ...                   class_names=("background", "brain"))
    >>> ModelConfig.from_json(cfg.to_json()) == cfg
    True
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from .values import (
    BACKGROUND_COLOR,
    DEFAULT_PALETTE,
    MAX_CLASSES,
    MAX_IN_CHANNELS,
    MAX_PATCH_EXTENT,
    MAX_SLICE_MARGIN_MM,
    MODULE_NAME,
    ORIENTATION_PAIRS,
    RESERVED_ARCH_KWARGS,
    TARGET_SPACING_RANGE_MM,
    as_int,
    as_str,
    as_tuple,
    check_color,
    freeze,
    hex_to_rgba,
    thaw,
)

__all__ = ["ModelConfig"]


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """How to build a segmentation model and what input it expects.

    Attributes:
        architecture: registry key, e.g. ``"unet"`` or ``"transunet"``.
        spatial_dims: 2 (the model sees slices) or 3 (the model sees volumes).
        in_channels: input channels; for a 2D model fed with neighbouring slices as
            channels, the number of slices (e.g. 3: the slice and one on each side).
        class_names: output classes in logit order; index 0 is background.
        arch_kwargs: extra keyword arguments of the architecture (e.g. ``features``);
            ``spatial_dims``, ``in_channels`` and ``out_channels`` come from this config.
        class_colors: one colour per class, ``"#rrggbb[aa]"`` or RGBA floats in [0, 1];
            empty means a default palette with a transparent background.
        modality: imaging modality the model was trained on, DICOM style (``"MR"``, ``"CT"``).
        canonical_orientation: the orientation the model's input grid must have, as a
            three-letter code in SimpleITK's ``DICOMOrient`` convention: letter i names the
            anatomical direction (L/R, P/A, S/I) toward which image axis i increases, with the
            axes in SimpleITK's (x, y, z) order, i.e. the array's last, middle and first axis.
            ``"LPS"`` (the default) is the identity direction: array (z, y, x) runs toward
            superior, posterior and left.
        target_spacing: voxel size (mm) the model works at, in (z, y, x) order.
        normalization: intensity normalisation, e.g.
            ``{"method": "percentile", "low": 0.5, "high": 99.5}``.
        patch_size: training/inference window in array order, one int per spatial dim;
            empty means the whole slice (2D) or the whole volume (3D).
        dropout_sites: module names (e.g. ``"decoder"``) under which MC dropout may be
            switched on; every dropout module inside a named module counts.
        gradcam_layer: module name Grad-CAM hooks by default; empty means the
            architecture's ``default_gradcam_layer``.
        extra: free-form JSON data for later additions (e.g. an OOD threshold). Its
            ``"label_values"``, when present, is checked here: one distinct integer in
            [0, 65535] per class, 0 for background; the value written for each class in
            label files (e.g. FreeSurfer ids), see :meth:`encode_labels`. Its
            ``"slice_margin_mm"`` (2D models, checked here: a number in [0, 256]) is the
            least air the network sees between the scan's foreground and each in-plane
            edge, see :attr:`slice_margin_mm`.
    """

    architecture: str
    spatial_dims: int
    in_channels: int
    class_names: tuple[str, ...]
    arch_kwargs: Mapping[str, Any] = field(default_factory=dict)
    class_colors: tuple[Any, ...] = ()
    modality: str = "MR"
    canonical_orientation: str = "LPS"
    target_spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    normalization: Mapping[str, Any] = field(
        default_factory=lambda: {"method": "percentile", "low": 0.5, "high": 99.5}
    )
    patch_size: tuple[int, ...] = ()
    dropout_sites: tuple[str, ...] = ()
    gradcam_layer: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._set("architecture", as_str("architecture", self.architecture))
        dims = as_int("spatial_dims", self.spatial_dims)
        if dims not in (2, 3):
            raise ValueError(f"spatial_dims {self.spatial_dims!r} must be 2 or 3")
        self._set("spatial_dims", dims)
        channels = as_int("in_channels", self.in_channels)
        if not 1 <= channels <= MAX_IN_CHANNELS:
            raise ValueError(f"in_channels {self.in_channels!r} must be between 1 and {MAX_IN_CHANNELS}")
        self._set("in_channels", channels)
        self._check_classes()
        self._check_arch_kwargs()
        self._set("modality", as_str("modality", self.modality))
        self._check_orientation()
        self._check_spacing_and_patch()
        if not isinstance(self.normalization, Mapping) or not isinstance(
            self.normalization.get("method"), str
        ):
            raise ValueError(
                f"normalization {self.normalization!r} must be a mapping with a 'method' string"
            )
        self._set("normalization", freeze(self.normalization, "normalization"))
        sites = as_tuple("dropout_sites", self.dropout_sites)
        for site in sites:
            if not isinstance(site, str) or not MODULE_NAME.match(site):
                raise ValueError(f"dropout_sites entry {site!r} is not a module name")
        self._set("dropout_sites", sites)
        layer = as_str("gradcam_layer", self.gradcam_layer, empty=True)
        if layer and not MODULE_NAME.match(layer):
            raise ValueError(f"gradcam_layer {layer!r} is not a module name")
        if not isinstance(self.extra, Mapping):
            raise ValueError(f"extra {self.extra!r} must be a mapping")
        self._set("extra", freeze(self.extra, "extra"))
        self._check_label_values()
        self._check_slice_margin()

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # frozen: only __post_init__ normalises fields

    def _check_classes(self) -> None:
        names = as_tuple("class_names", self.class_names)
        if len(names) < 2:
            raise ValueError(f"class_names {names!r} must name background and at least one class")
        if len(names) > MAX_CLASSES:
            raise ValueError(f"class_names has {len(names)} entries; at most {MAX_CLASSES} are allowed")
        for name in names:
            as_str("class name", name)
        if len(set(names)) != len(names):
            raise ValueError(f"class_names {names!r} must be unique")
        colors = as_tuple("class_colors", self.class_colors)
        if not colors:
            palette = DEFAULT_PALETTE
            colors = (BACKGROUND_COLOR,) + tuple(
                palette[i % len(palette)] for i in range(len(names) - 1)
            )
        if len(colors) != len(names):
            raise ValueError(
                f"class_colors {colors!r} has {len(colors)} entries; class_names has {len(names)}"
            )
        self._set("class_names", names)
        self._set("class_colors", tuple(check_color(i, c) for i, c in enumerate(colors)))

    def _check_label_values(self) -> None:
        values = self.extra.get("label_values")
        if values is None:
            return
        values = as_tuple("extra['label_values']", values)
        if len(values) != len(self.class_names):
            raise ValueError(
                f"extra['label_values'] has {len(values)} entries; class_names has {len(self.class_names)}"
            )
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
                raise ValueError(f"extra['label_values'] entry {value!r} must be an integer in [0, 65535]")
        if values[0] != 0 or len(set(values)) != len(values):
            raise ValueError(f"extra['label_values'] {list(values)} must be distinct, with 0 for background")

    def _check_slice_margin(self) -> None:
        margin = self.extra.get("slice_margin_mm")
        if margin is None:
            return
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin <= MAX_SLICE_MARGIN_MM:
            raise ValueError(f"extra['slice_margin_mm'] {margin!r} must be a number in [0, {MAX_SLICE_MARGIN_MM}]")
        if margin and self.spatial_dims != 2:
            raise ValueError(f"extra['slice_margin_mm'] {margin!r} is for 2D models; this one is {self.spatial_dims}D")

    def _check_arch_kwargs(self) -> None:
        if not isinstance(self.arch_kwargs, Mapping):
            raise ValueError(f"arch_kwargs {self.arch_kwargs!r} must be a mapping")
        reserved = sorted(set(self.arch_kwargs) & set(RESERVED_ARCH_KWARGS))
        if reserved:
            raise ValueError(
                f"arch_kwargs keys {reserved} are set by the config's own fields "
                "(spatial_dims, in_channels, class_names)"
            )
        self._set("arch_kwargs", freeze(self.arch_kwargs, "arch_kwargs"))

    def _check_orientation(self) -> None:
        code = as_str("canonical_orientation", self.canonical_orientation).upper()
        ok = len(code) == 3 and all(
            sum(letter in pair for letter in code) == 1 for pair in ORIENTATION_PAIRS
        )
        if not ok:
            raise ValueError(
                f"canonical_orientation {self.canonical_orientation!r} must be 3 letters, "
                "one from each of L/R, P/A, S/I (e.g. 'LPS')"
            )
        self._set("canonical_orientation", code)

    def _check_spacing_and_patch(self) -> None:
        spacing = as_tuple("target_spacing", self.target_spacing)
        try:
            spacing = tuple(float(s) for s in spacing)
        except (TypeError, ValueError):
            raise ValueError(f"target_spacing {self.target_spacing!r} must be numbers") from None
        if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(
                f"target_spacing {self.target_spacing!r} must be 3 finite positive values "
                "(mm, z y x)"
            )
        low, high = TARGET_SPACING_RANGE_MM
        if not all(low <= s <= high for s in spacing):
            raise ValueError(f"target_spacing {self.target_spacing!r} must lie between {low:g} and {high:g} mm")
        self._set("target_spacing", spacing)
        patch = tuple(
            as_int("patch_size entry", p) for p in as_tuple("patch_size", self.patch_size)
        )
        if patch and (len(patch) != self.spatial_dims or min(patch) < 1 or max(patch) > MAX_PATCH_EXTENT):
            raise ValueError(
                f"patch_size {self.patch_size!r} must be {self.spatial_dims} ints from 1 to {MAX_PATCH_EXTENT} "
                "(spatial_dims) or empty"
            )
        self._set("patch_size", patch)

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __reduce__(self) -> tuple[Any, tuple[dict[str, Any]]]:
        # Mapping proxies do not pickle; rebuild from plain data (worker processes, deepcopy).
        return (type(self).from_dict, (self.to_dict(),))

    @property
    def num_classes(self) -> int:
        """Number of output channels (logits), background included."""
        return len(self.class_names)

    @property
    def slice_margin_mm(self) -> float:
        """Air (mm) a 2D network sees around the scan's foreground in each slice (0: none)."""
        return float(self.extra.get("slice_margin_mm", 0.0))

    @property
    def context_offsets(self) -> tuple[int, ...]:
        """Slice offsets (in model-grid slices) a 2D model stacks as its input channels:
        ``extra["context_offsets_mm"]`` divided by the slice spacing, or (0,).

        Raises:
            ValueError: the offsets do not match ``in_channels``, or there are none for a
                model with more than one input channel.
        """
        offsets_mm = self.extra.get("context_offsets_mm")
        if not offsets_mm:
            if self.in_channels != 1:
                raise ValueError(f"model has {self.in_channels} input channels but no context_offsets_mm")
            return (0,)
        offsets = tuple(int(round(o / self.target_spacing[0])) for o in offsets_mm)
        if len(offsets) != self.in_channels:
            raise ValueError(f"context_offsets_mm {list(offsets_mm)} do not match in_channels {self.in_channels}")
        return offsets

    @property
    def label_values(self) -> tuple[int, ...]:
        """The value written for each class in label files: ``extra["label_values"]`` or
        the class indices 0..K-1."""
        values = self.extra.get("label_values")
        return tuple(int(v) for v in values) if values is not None else tuple(range(self.num_classes))

    def encode_labels(self, labels: Any) -> Any:
        """Class indices (any shape) -> the written label values: uint8 when they fit, else uint16."""
        import numpy as np

        values = np.asarray(self.label_values, dtype=np.uint16 if max(self.label_values) > 255 else np.uint8)
        return values[np.asarray(labels)]

    def decode_labels(self, values: Any) -> Any:
        """Written label values -> class indices (uint8 or uint16).

        Raises:
            ValueError: a value that names no class (the first one is quoted).
        """
        import numpy as np

        values = np.asarray(values)
        if self.extra.get("label_values") is None:
            if values.size and (values.min() < 0 or values.max() >= self.num_classes):
                bad = values[(values < 0) | (values >= self.num_classes)].flat[0]
                raise ValueError(f"label value {bad} names no class of {self.num_classes}")
            return values
        table = np.full(max(self.label_values) + 1, -1, np.int32)
        table[list(self.label_values)] = np.arange(self.num_classes)
        inside = (values >= 0) & (values < table.size)
        indices = np.where(inside, table[np.clip(values, 0, table.size - 1).astype(np.int64)], -1)
        if (indices < 0).any():
            raise ValueError(f"label value {values[indices < 0].flat[0]} names no class; known: {list(self.label_values)}")
        return indices.astype(np.uint8 if self.num_classes <= 256 else np.uint16)

    def rgba_colors(self) -> tuple[tuple[float, float, float, float], ...]:
        """Class colours as RGBA floats in [0, 1], one per class."""
        return tuple(hex_to_rgba(c) if isinstance(c, str) else c for c in self.class_colors)

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-ready dict (lists instead of tuples)."""
        return {f.name: thaw(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Build and validate a config from a dict such as :meth:`to_dict` returns.

        Raises:
            ValueError: unknown or missing keys, or a field with a bad value (named).
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"model config {data!r} must be a mapping")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known), key=str)
        if unknown:
            raise ValueError(f"unknown model config key(s) {unknown}; known keys: {known}")
        required = [
            f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
        ]
        missing = [name for name in required if name not in data]
        if missing:
            raise ValueError(f"model config is missing required key(s) {missing}")
        return cls(**data)

    def to_json(self, indent: int | None = 2) -> str:
        """The config as JSON text (sorted keys, stable across runs)."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        """Parse and validate JSON text.

        Raises:
            ValueError: invalid JSON, or any :meth:`from_dict` error.
        """
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as err:
            raise ValueError(f"model config is not valid JSON: {err}") from None
        return cls.from_dict(data)

