"""A bundle's post-processing settings, parsed once from ``config.extra["postprocess"]``.

The bundle stores them as JSON::

    {"brain_mask": {"closing_voxels": 3, "opening_mm": 5.0, "atlas_margin_mm": 10.0},
     "largest_component": false,
     "em_refine": {"iterations": 12, "prior_weight": 1.0, "network_override": 0.9,
                   "keep_background": true, "class_groups": [0, 1, 2, 3]}}

Every key is optional; an absent or empty entry switches its step off. Unknown keys and
values of the wrong type or out of range are refused with the value named, when the
bundle is read, not deep inside a segmentation.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["BrainMaskSettings", "MixtureSettings", "PostprocessSettings"]

logger = logging.getLogger(__name__)


def _number(where: str, value: Any, low: float, high: float, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"postprocess {where} {value!r} must be a finite number")
    if integer and int(value) != value:
        raise ValueError(f"postprocess {where} {value!r} must be a whole number")
    if not low <= value <= high:
        raise ValueError(f"postprocess {where} {value!r} must be in [{low:g}, {high:g}]")
    return int(value) if integer else float(value)


def _entry(where: str, raw: Any, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"postprocess {where} {raw!r} must be a mapping")
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ValueError(f"postprocess {where} has unknown keys {unknown} (known: {list(allowed)})")
    return raw


@dataclass(frozen=True)
class BrainMaskSettings:
    """How the brain mask is drawn (see :func:`~napari_medseg.postprocess.brain_mask.brain_mask`).

    Attributes:
        closing_voxels: radius of the closing of the network's mask, in voxels.
        stripped_support_fraction: share of a zero-background scan's non-zero region the
            network must cover for the scan to count as brain-extracted.
        opening_mm: radius of the opening that cuts bridges to the scalp and neck (mm).
        atlas_margin_mm: the brain may lie within this distance of the fitted MNI atlas
            (mm), or None: no atlas.
    """

    closing_voxels: int = 3
    stripped_support_fraction: float = 0.6
    opening_mm: float = 0.0
    atlas_margin_mm: float | None = None

    @classmethod
    def from_dict(cls, raw: Any) -> BrainMaskSettings:
        raw = _entry("brain_mask", raw, ("closing_voxels", "stripped_support_fraction", "opening_mm", "atlas_margin_mm"))
        margin = raw.get("atlas_margin_mm")
        return cls(
            closing_voxels=_number("brain_mask.closing_voxels", raw.get("closing_voxels", 3), 0, 50, integer=True),
            stripped_support_fraction=_number(
                "brain_mask.stripped_support_fraction", raw.get("stripped_support_fraction", 0.6), 0, 1
            ),
            opening_mm=_number("brain_mask.opening_mm", raw.get("opening_mm", 0.0), 0, 50),
            atlas_margin_mm=None if margin is None else _number("brain_mask.atlas_margin_mm", margin, 0, 100),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "closing_voxels": self.closing_voxels,
            "stripped_support_fraction": self.stripped_support_fraction,
            "opening_mm": self.opening_mm,
        }
        if self.atlas_margin_mm is not None:
            out["atlas_margin_mm"] = self.atlas_margin_mm
        return out


@dataclass(frozen=True)
class MixtureSettings:
    """The per-scan tissue mixture (see :mod:`napari_medseg.postprocess.mixture`).

    Attributes:
        iterations: EM iterations.
        prior_weight: exponent w of the network's probabilities as a prior (0: none).
        network_override: the network's confidence above which its class replaces the
            mixture's (fine-tuned versions), or None.
        keep_background: the voxels the network labels background stay background; the
            mixture only re-decides between the tissues where the network found tissue.
            False: every voxel of the brain mask gets a tissue.
        class_groups: the tissue group of each class (0 for the background only, then
            1..G), or None: one Gaussian per class (see :mod:`..mixture`).
        on_request: the step runs only when the user asks for it (``refine``: ``medseg
            segment --refine``, the panel's "Refine" box); otherwise always.
    """

    iterations: int = 12
    prior_weight: float = 1.0
    network_override: float | None = None
    keep_background: bool = False
    class_groups: tuple[int, ...] | None = None
    on_request: bool = False

    @classmethod
    def from_dict(cls, raw: Any) -> MixtureSettings:
        keys = ("iterations", "prior_weight", "network_override", "keep_background", "class_groups", "on_request")
        raw = _entry("em_refine", raw, keys)
        override = raw.get("network_override")
        keep, on_request = (_flag(f"em_refine.{key}", raw.get(key, False)) for key in ("keep_background", "on_request"))
        groups = raw.get("class_groups")
        return cls(
            iterations=_number("em_refine.iterations", raw.get("iterations", 12), 1, 1000, integer=True),
            prior_weight=_number("em_refine.prior_weight", raw.get("prior_weight", 1.0), 0, 10),
            network_override=None if override is None else _number("em_refine.network_override", override, 0, 1),
            keep_background=keep,
            class_groups=None if groups is None else _class_groups(groups),
            on_request=on_request,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"iterations": self.iterations, "prior_weight": self.prior_weight}
        if self.network_override is not None:
            out["network_override"] = self.network_override
        if self.keep_background:
            out["keep_background"] = True
        if self.class_groups is not None:
            out["class_groups"] = list(self.class_groups)
        if self.on_request:
            out["on_request"] = True
        return out


def _flag(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"postprocess {where} {value!r} must be true or false")
    return value


def _class_groups(raw: Any) -> tuple[int, ...]:
    where = f"postprocess em_refine.class_groups {raw!r}"
    if not isinstance(raw, (list, tuple)) or not all(isinstance(g, int) and not isinstance(g, bool) for g in raw):
        raise ValueError(f"{where} must be a list of whole numbers")
    groups = tuple(raw)
    if len(groups) < 2 or groups[0] != 0 or 0 in groups[1:]:
        raise ValueError(f"{where} must start with 0 (the background) and give every other class a group >= 1")
    if set(groups[1:]) != set(range(1, max(groups) + 1)):
        raise ValueError(f"{where} must use the groups 1..{max(groups)} each at least once")
    return groups


@dataclass(frozen=True)
class PostprocessSettings:
    """The whole post-processing of a bundle; all None/False is "nothing to do".

    Attributes:
        brain_mask: the brain mask step, or None.
        largest_component: without a brain mask step, keep the largest foreground piece.
        mixture: the per-scan tissue mixture, or None.
    """

    brain_mask: BrainMaskSettings | None = None
    largest_component: bool = False
    mixture: MixtureSettings | None = None

    @classmethod
    def from_config(cls, config: Any, enabled: bool = True, refine: bool = False) -> PostprocessSettings:
        """The settings of a model configuration (none when not ``enabled``); a mixture
        kept ``on_request`` only with ``refine``.

        Raises:
            ValueError: the bundle's entry is malformed (the bad key or value is named).
        """
        settings = cls.offered(config) if enabled else cls()
        on_request = settings.mixture is not None and settings.mixture.on_request
        if refine and enabled and not on_request:
            logger.warning("refine: this model offers no refinement on request; only its own post-processing runs")
        return replace(settings, mixture=None) if on_request and not refine else settings

    @classmethod
    def offered(cls, config: Any) -> PostprocessSettings:
        """Every step of ``config``'s post-processing, those kept on request included.

        Raises:
            ValueError: the bundle's entry is malformed (the bad key or value is named).
        """
        extra = getattr(config, "extra", None) or {}
        settings = cls.from_dict(extra.get("postprocess") or {})
        groups = settings.mixture.class_groups if settings.mixture is not None else None
        names = getattr(config, "class_names", None)
        if groups is not None and names is not None and len(groups) != len(names):
            raise ValueError(
                f"postprocess em_refine.class_groups has {len(groups)} entries for {len(names)} classes {list(names)}"
            )
        return settings

    @classmethod
    def refinement_offered(cls, config: Any) -> bool:
        """Whether ``config`` has a per-scan refinement that runs on request (``refine``)."""
        mixture = cls.offered(config).mixture
        return mixture is not None and mixture.on_request

    @classmethod
    def from_dict(cls, raw: Any) -> PostprocessSettings:
        raw = _entry("settings", raw, ("brain_mask", "largest_component", "em_refine"))
        largest = _flag("largest_component", raw.get("largest_component", False))
        return cls(
            brain_mask=BrainMaskSettings.from_dict(raw["brain_mask"]) if raw.get("brain_mask") else None,
            largest_component=largest,
            mixture=MixtureSettings.from_dict(raw["em_refine"]) if raw.get("em_refine") else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in a bundle (only the steps that are on)."""
        out: dict[str, Any] = {}
        if self.brain_mask is not None:
            out["brain_mask"] = self.brain_mask.to_dict()
        if self.largest_component:
            out["largest_component"] = True
        if self.mixture is not None:
            out["em_refine"] = self.mixture.to_dict()
        return out

    def __bool__(self) -> bool:
        return self.brain_mask is not None or self.largest_component or self.mixture is not None

    @property
    def fixed_mask(self) -> bool:
        """Whether the region the mixture works in is decided once per scan (a brain mask
        or the largest piece), rather than by each prediction's own foreground."""
        return self.brain_mask is not None or self.largest_component

    @property
    def sample_dependent(self) -> bool:
        """Whether the post-processing treats Monte Carlo samples differently: a mixture
        that uses the network as a prior or lets it override, or whose region is each
        sample's own foreground (no fixed mask, or ``keep_background``)."""
        mixture = self.mixture
        if mixture is None:
            return False
        own_region = mixture.keep_background or not self.fixed_mask
        return mixture.prior_weight > 0 or mixture.network_override is not None or own_region

    def with_override(self, threshold: float) -> PostprocessSettings:
        """A copy whose mixture lets the network override it above ``threshold``."""
        if self.mixture is None:
            raise ValueError("these settings have no tissue mixture to override")
        return replace(self, mixture=replace(self.mixture, network_override=float(threshold)))

    def without_mixture(self) -> PostprocessSettings:
        return replace(self, mixture=None)
