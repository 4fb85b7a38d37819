"""The tests of the out-of-distribution decision, each reported by name with its value.

The network's score (:mod:`.ood`) alone does not separate every CT from brain MRIs: a CT
inside the skull is a smooth image that some networks segment with confidence. So the
decision takes the first of these tests that flags (:func:`decide`), and reports all:

``"score"``
    The bundle's calibrated score (mean normalised entropy of the plain prediction over
    its foreground) above its threshold (``config.extra["ood"]``). An external model still
    calibrating on first use reports its score without a flag (:func:`calibrating_signal`).
``"modality"``
    The scan states a modality (DICOM ``Modality``, a MetaImage ``Modality``) other than
    the bundle's (``config.modality``). ``""``, ``"unknown"`` and ``"OT"`` (other) say
    nothing and are not tested.
``"hounsfield_air"``
    For MR bundles only: the share of voxels below -500. CT values are Hounsfield units,
    in which air is -1000: every real CT seen here had 21-69% of its voxels below -500
    (head, neck, abdomen; a brain-masked head CT 64%), while an MR magnitude image has
    none (its values are non-negative; even interpolation undershoot stays near zero).
    Flagged from :data:`AIR_FRACTION` (5%) on.
``"brain_volume"``
    For bundles with ``config.extra["expected_volume_ml"]`` (each class's volume range in
    the anatomies the model was trained on): the plain prediction's volume over those
    classes, on the model grid and inside the brain the model's locator found when it
    has one (as the labels users see), outside [sum of the lows / :data:`VOLUME_FACTOR`, sum of
    the highs * :data:`VOLUME_FACTOR`]. A brain model that finds 40 mL or 6 L of brain is
    not looking at a whole brain. The factor leaves room for real heads outside the
    training anatomies (and for the network's own errors); a scan that covers only part
    of the brain is flagged too, rightly: its volumes say nothing about the brain.

A test whose input is missing (no threshold, no stated modality, no volume ranges, no
raw image) is reported with ``flag`` None and does not take part.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Hounsfield units below which a voxel counts as air (air -1000, fat about -100).
HU_AIR = -500.0
#: Share of voxels below :data:`HU_AIR` from which an image given to an MR bundle is taken for a CT.
AIR_FRACTION = 0.05
#: The plausible brain volume is the training range widened by this factor both ways.
VOLUME_FACTOR = 2.0
#: Stated modalities that say nothing about the image.
UNSTATED_MODALITIES = frozenset({"", "UNKNOWN", "OT"})
#: Voxels per slab when counting: slab-sized temporaries for any input size.
_SLAB_VOXELS = 1 << 22

SIGNALS = ("score", "modality", "hounsfield_air", "brain_volume")


@dataclass(frozen=True)
class OODSignal:
    """One test of the OOD decision.

    Attributes:
        name: one of :data:`SIGNALS`.
        value: what was measured (a score, a share of voxels, mL, a modality), None when
            the test could not run.
        rule: when it flags, e.g. ``"> 0.893"``.
        flag: True when it flags, False when it does not, None when it could not run.
        detail: one sentence for people (what was measured, against what).
    """

    name: str
    value: float | str | None
    rule: str
    flag: bool | None
    detail: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"value", "rule", "flag", "detail"}``."""
        return {"value": self.value, "rule": self.rule, "flag": self.flag, "detail": self.detail}


def score_signal(score: float, threshold: float | None) -> OODSignal:
    """The calibrated score against the bundle's threshold (NaN flags)."""
    if threshold is None:
        return OODSignal("score", round(score, 6), "", None, f"score {score:.3f}: the bundle has no calibrated threshold")
    flag = bool(not score <= threshold)
    relation = ">" if flag else "<="
    return OODSignal("score", round(score, 6), f"> {threshold:.6g}", flag, f"score {score:.3f} {relation} threshold {threshold:.3f}")


def calibrating_signal(score: float, seen: int, needed: int, why_not_counted: str = "") -> OODSignal:
    """The score of an external model whose threshold is still being calibrated on first use
    (:mod:`.ood_first_use`): reported, never flagged."""
    detail = f"score {score:.3f}: calibrating: {seen} of {needed} scans seen, no flag from the score until then"
    if why_not_counted:
        detail += f" (this scan not counted: {why_not_counted})"
    return OODSignal("score", round(score, 6), "", None, detail)


def modality_signal(stated: str | None, expected: str | None) -> OODSignal:
    """The scan's stated modality against the bundle's."""
    stated_up, expected_up = (stated or "").strip().upper(), (expected or "").strip().upper()
    if stated_up in UNSTATED_MODALITIES or not expected_up:
        return OODSignal("modality", stated or None, f"!= {expected_up or '?'}", None, "the scan states no modality")
    flag = stated_up != expected_up
    detail = f"the scan is {stated_up}, the model was trained on {expected_up}"
    return OODSignal("modality", stated_up, f"!= {expected_up}", flag, detail)


def air_fraction(array: np.ndarray) -> float:
    """Share of the voxels of a (z, y, x) array below :data:`HU_AIR` (NaN is not below),
    counted slab by slab along the first axis (a memmap is read, never copied whole)."""
    a = np.asarray(array)
    if a.size == 0:
        return 0.0
    step = max(1, _SLAB_VOXELS // max(1, math.prod(a.shape[1:])))
    below = sum(int(np.count_nonzero(a[start : start + step] < HU_AIR)) for start in range(0, a.shape[0], step))
    return below / a.size


def hounsfield_air_signal(array: np.ndarray | None, expected: str | None) -> OODSignal:
    """For an MR bundle: the share of voxels of the raw scan below -500 (air in a CT)."""
    rule = f">= {AIR_FRACTION:.0%} of voxels below {HU_AIR:g}"
    if array is None or (expected or "").strip().upper() != "MR":
        return OODSignal("hounsfield_air", None, rule, None, "tested for MR models on the raw scan only")
    fraction = air_fraction(array)
    flag = fraction >= AIR_FRACTION
    what = "air in Hounsfield units: a CT" if flag else "no CT air"
    return OODSignal("hounsfield_air", round(fraction, 6), rule, flag, f"{fraction:.1%} of the voxels lie below {HU_AIR:g} ({what})")


def expected_brain_range(config: Any) -> tuple[tuple[str, ...], float, float] | None:
    """(classes, low mL, high mL) of ``config.extra["expected_volume_ml"]``, summed over the
    model's classes that have a range; None without ranges.

    Raises:
        ValueError: a range that is not two finite numbers, low <= high (quoted).
    """
    extra = getattr(config, "extra", None) or {}
    ranges = extra.get("expected_volume_ml") if isinstance(extra, Mapping) else None
    if not ranges:
        return None
    names, low, high = [], 0.0, 0.0
    for name in getattr(config, "class_names", ())[1:]:
        bounds = ranges.get(name)
        if bounds is None:
            continue
        if (not isinstance(bounds, Sequence) or len(bounds) != 2
                or not all(isinstance(b, (int, float)) and math.isfinite(b) for b in bounds) or bounds[0] > bounds[1]):  # fmt: skip
            raise ValueError(f"config.extra['expected_volume_ml'][{name!r}] {bounds!r} must be [low, high] in mL")
        names.append(name)
        low, high = low + float(bounds[0]), high + float(bounds[1])
    return (tuple(names), low, high) if names else None


def brain_volume_signal(class_ml: Mapping[str, float] | None, config: Any) -> OODSignal:
    """The predicted volume of the classes with a training range against their summed range,
    widened by :data:`VOLUME_FACTOR`."""
    expected = expected_brain_range(config)
    if expected is None or class_ml is None:
        return OODSignal("brain_volume", None, "", None, "the bundle has no expected volumes")
    names, low, high = expected
    lowest, highest = low / VOLUME_FACTOR, high * VOLUME_FACTOR
    ml = float(sum(class_ml.get(name, 0.0) for name in names))
    flag = not lowest <= ml <= highest
    rule = f"outside {lowest:.0f}-{highest:.0f} mL"
    where = "outside" if flag else "within"
    detail = f"{ml:.0f} mL of {'+'.join(names)} predicted, {where} {lowest:.0f}-{highest:.0f} mL"
    return OODSignal("brain_volume", round(ml, 2), rule, flag, detail)


def decide(signals: Sequence[OODSignal]) -> bool | None:
    """True when any signal flags, False when some ran and none flags, None when none ran."""
    ran = [s.flag for s in signals if s.flag is not None]
    if not ran:
        return None
    return any(ran)
