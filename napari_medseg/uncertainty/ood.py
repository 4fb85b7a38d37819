"""Image-level out-of-distribution (OOD) score, its calibration and the bundle's threshold.

Main score, ``"foreground_entropy"``: the mean normalised entropy H(p) / log K of the
model's plain (deterministic, eval-mode, not post-processed) prediction over the voxels it
predicts as foreground (any class but background), in [0, 1].

Why this one:

- It is available on every run at the cost of one plain pass: with or without uncertainty
  sampling, and with the same value whichever sampler runs (every sampler returns the
  first model's plain prediction beside its samples), so one calibrated threshold per
  bundle serves MC dropout, TTA, ensembles and a plain segmentation alike. Scores built on
  sampled maps (mean epistemic, entropy of the MC mean) change with the method and the
  sample count and would need one threshold per method and S.
- On the training distribution the foreground is mostly tissue interior, predicted with
  confidence; uncertainty concentrates on thin boundaries, so the mean is low and stable.
  On inputs unlike the training data (another modality, broken contrast, no anatomy the
  model knows) the network's tissue predictions lose confidence over large areas and the
  mean rises. Restricting to the predicted foreground keeps the score independent of the
  field of view (air and padding are confidently background and would dilute it).
- The energy score (-logsumexp of logits) is a fine alternative but needs logits, which
  the inference API does not keep; entropy needs only the probabilities.

When nothing is predicted as foreground the score is 1.0 (maximal): an image in which the
model finds no tissue is not one it should be trusted on.

The decision (:func:`assess_ood`) does not rest on the score alone: a CT given to a brain
MR model is flagged by what the scan states (its modality), by its intensities (air in
Hounsfield units) and by the predicted brain volume, each a named test with its value in
the result (see :mod:`.ood_signals`). Reported beside them, not thresholded: the predicted
foreground fraction of the model-grid volume and its volume in mL, and, when samples
were drawn, the mean epistemic uncertainty (mutual information) over the same foreground.

Calibration (:func:`calibrate_ood`): score in-distribution images (synthetic training-like
volumes, augmented copies of the sample volume; never validation scans), threshold =
max(mean + 3 sd, max score) * 1.5: mean + 3 sd is about a 0.1% false-alarm rate for roughly
normal scores, the maximum keeps every calibration image unflagged, and the 50% margin
covers the gap between these clean calibration images and real scans. The result lives in the bundle's ``config.extra["ood"] =
{"score": "foreground_entropy", "threshold": t, "calibration": {...}}``. An nnU-Net folder or
MONAI bundle gets the same entry from its first scans, kept in the user's data folder
(:mod:`.ood_first_use`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ..io.limits import release_pages
from ..preprocess import argmax_labels
from .decompose import entropy
from .ood_signals import (
    OODSignal,
    brain_volume_signal,
    decide,
    hounsfield_air_signal,
    modality_signal,
    score_signal,
)

logger = logging.getLogger(__name__)

MAIN_SCORE = "foreground_entropy"
# Voxels per slab when scoring: keeps the float64 entropy temporaries at a few MB.
SLAB_VOXELS = 1 << 20
#: Known score names (``config.extra["ood"]["score"]``) and what they measure.
SCORES = {MAIN_SCORE: "mean normalised entropy H(p)/log K of the plain prediction over its predicted foreground"}

__all__ = [
    "MAIN_SCORE",
    "OODResult",
    "SCORES",
    "assess_ood",
    "calibrate_ood",
    "ood_calibration",
    "ood_flag",
    "ood_score",
    "ood_threshold",
]


@dataclass(frozen=True)
class OODResult:
    """The OOD assessment of one image.

    Attributes:
        score_name: which score (see :data:`SCORES`).
        score: its value.
        threshold: the bundle's calibrated threshold, None when the bundle has none.
        flag: True when any test in ``signals`` flags; False when some ran and none
            flags; None when none could run.
        foreground_fraction: predicted foreground voxels / all voxels (model grid).
        foreground_ml: predicted foreground volume in mL.
        foreground_epistemic: mean mutual information (nats) over the predicted foreground
            when samples were drawn, else None.
        signals: every test of the decision (:mod:`.ood_signals`), flagged or not.
        calibrating: for an external model still calibrating its threshold on first use,
            how far it is (e.g. ``"3 of 5 scans seen"``, :mod:`.ood_first_use`); else None.
    """

    score_name: str
    score: float
    threshold: float | None
    flag: bool | None
    foreground_fraction: float
    foreground_ml: float
    foreground_epistemic: float | None = None
    signals: tuple[OODSignal, ...] = ()
    calibrating: str | None = None

    @property
    def flagged_by(self) -> list[str]:
        """Names of the tests that flag."""
        return [signal.name for signal in self.signals if signal.flag]

    def describe(self) -> str:
        """One line naming each test that flags and its value, or what was found."""
        flagged = [s for s in self.signals if s.flag]
        if flagged:
            return "; ".join(f"{s.name}: {s.detail}" for s in flagged)
        ran = [s for s in self.signals if s.flag is not None]
        return "; ".join(f"{s.name}: {s.detail}" for s in ran) if ran else "no test could run"

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (for ``<stem>_report.json``): the fields, ``signals`` as
        ``{name: {"value", "rule", "flag", "detail"}}`` and ``flagged_by``."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "signals"}
        data["flagged_by"] = self.flagged_by
        data["signals"] = {signal.name: signal.as_dict() for signal in self.signals}
        return data


def ood_score(
    probabilities: np.ndarray,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    channel_axis: int = 0,
    epistemic: np.ndarray | None = None,
    within: np.ndarray | None = None,
) -> dict[str, float | None]:
    """The OOD signals of one plain prediction.

    Args:
        probabilities: class probabilities, background first, e.g. (K, z, y, x) with
            ``channel_axis=0`` or (z, y, x, K) with ``channel_axis=-1``; not post-processed.
        spacing: voxel size in mm (for the volume in mL).
        epistemic: optional (z, y, x) mutual-information map on the same grid.
        within: optional (z, y, x) bool region on the same grid (the brain a model's
            locator found): ``class_ml`` counts only its voxels, as the labels users see
            do; the other signals read the whole prediction.

    Returns:
        ``{"foreground_entropy", "foreground_fraction", "foreground_ml",
        "foreground_epistemic", "class_ml"}``: the epistemic mean is None without
        ``epistemic``; ``class_ml`` is the volume in mL of each class's arg-max voxels
        (inside ``within`` when given; a list of K, background first).

    The volume is visited in slabs along its first spatial axis (about
    ``SLAB_VOXELS`` voxels each), so the working arrays (the argmax, the float64
    entropy) are slab-sized, and the pages of a disk-backed ``probabilities`` are released
    after each; the means are sums over slabs, equal to whole-volume means up to float64
    rounding.
    """
    p = np.asarray(probabilities)
    axis = channel_axis % max(p.ndim, 1)
    k = p.shape[axis]
    if k < 2:
        raise ValueError(f"probabilities of shape {p.shape} need at least 2 classes on axis {channel_axis}")
    spatial_shape = p.shape[:axis] + p.shape[axis + 1 :]
    if epistemic is not None:
        epistemic = np.asarray(epistemic)
        if epistemic.shape != spatial_shape:
            raise ValueError(f"epistemic of shape {epistemic.shape} must match {spatial_shape}")
    if within is not None and np.shape(within) != spatial_shape:
        raise ValueError(f"within of shape {np.shape(within)} must match {spatial_shape}")
    count, entropy_sum, mi_sum = 0, 0.0, 0.0
    per_class = np.zeros(k, dtype=np.int64)
    for region in _slabs(spatial_shape):
        block = p[region[:axis] + (slice(None),) + region[axis:]]
        winner = argmax_labels(np.moveaxis(block, axis, -1))  # class-major storage read class by class
        counted = winner if within is None else winner[np.asarray(within[region], dtype=bool)]
        per_class += np.bincount(counted.reshape(-1), minlength=k)[:k]
        del counted
        foreground = winner != 0
        del winner
        n = int(foreground.sum())
        if n:
            count += n
            # Only the foreground's probabilities, gathered class by class into one (K, n) array.
            lead = (slice(None),) * axis
            chosen = np.empty((k, n), dtype=np.float32)
            for c in range(k):
                chosen[c] = block[lead + (c,)][foreground]
            entropy_sum += float(entropy(chosen, axis=0).sum(dtype=np.float64))
            del chosen
            if epistemic is not None:
                mi_sum += float(epistemic[region][foreground].sum(dtype=np.float64))
        release_pages(probabilities)  # a disk-backed prediction: the slab read leaves this process's memory
    score = entropy_sum / count / math.log(k) if count else 1.0
    mi = None
    if epistemic is not None:
        mi = mi_sum / count if count else 0.0
    size = math.prod(spatial_shape)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return {
        MAIN_SCORE: min(max(score, 0.0), 1.0),
        "foreground_fraction": count / size if size else 0.0,
        "foreground_ml": count * voxel_ml,
        "foreground_epistemic": mi,
        "class_ml": [int(n) * voxel_ml for n in per_class],
    }


def _slabs(shape: tuple[int, ...]) -> list[tuple[slice, ...]]:
    """Index tuples (one slice per axis of ``shape``) cutting it into slabs of about
    ``SLAB_VOXELS`` voxels along its first axis; one region for a 0-d shape."""
    if not shape:
        return [()]
    per_slice = max(1, math.prod(shape[1:]))
    step = max(1, SLAB_VOXELS // per_slice)
    rest = (slice(None),) * (len(shape) - 1)
    return [(slice(start, start + step), *rest) for start in range(0, max(shape[0], 1), step)]


def assess_ood(
    probabilities: np.ndarray,
    config: Any,
    *,
    spacing: Sequence[float],
    channel_axis: int = 0,
    epistemic: np.ndarray | None = None,
    scan: Any = None,
    within: np.ndarray | None = None,
) -> OODResult:
    """The OOD decision: :func:`ood_score` against the threshold of the model's ``config``,
    and the tests of :mod:`.ood_signals` (stated modality, Hounsfield air, brain volume).

    Args:
        probabilities: the plain prediction on the model grid, the scan's part only
            (see :func:`ood_score`).
        config: the model's config (``modality``, ``class_names``, ``extra["ood"]``,
            ``extra["expected_volume_ml"]``).
        spacing: the model grid's voxel size in mm.
        scan: the :class:`~napari_medseg.types.Volume` as read (its ``modality`` and raw
            intensities); without it the modality and intensity tests do not run.
        within: (z, y, x) bool on the same grid, the brain the model's locator found: the
            brain-volume test counts only its voxels (see :func:`ood_score`).
    """
    signals = ood_score(probabilities, spacing=spacing, channel_axis=channel_axis, epistemic=epistemic, within=within)
    threshold = ood_threshold(config)
    score = float(signals[MAIN_SCORE])
    names = tuple(getattr(config, "class_names", ()))
    class_ml = dict(zip(names, signals["class_ml"])) if len(names) == len(signals["class_ml"]) else None
    expected = getattr(config, "modality", None)
    tests = (
        score_signal(score, threshold),
        modality_signal(None if scan is None else scan.modality, expected),
        hounsfield_air_signal(None if scan is None else scan.array, expected),
        brain_volume_signal(class_ml, config),
    )
    return OODResult(
        score_name=MAIN_SCORE,
        score=score,
        threshold=threshold,
        flag=decide(tests),
        foreground_fraction=float(signals["foreground_fraction"]),
        foreground_ml=float(signals["foreground_ml"]),
        foreground_epistemic=signals["foreground_epistemic"],
        signals=tests,
    )


def calibrate_ood(scores_in_distribution: Sequence[float], *, sigmas: float = 3.0, margin: float = 0.5) -> float:
    """Threshold = max(mean + ``sigmas`` * sd, largest score) * (1 + ``margin``).

    The margin covers the gap between calibration images (synthetic slabs, augmented
    template copies: cleaner than real scans) and real in-distribution scans, which carry
    partial-volume effects, scanner noise, anatomy and resolutions the calibration set only
    partly covers. Measured with the default U-Net: real T1 scans (a skull-stripped subject,
    a full-head MPRAGE with face and neck) scored up to 1.3x the largest calibration score,
    a CT given to this brain MRI model 2.75x; a 50% margin keeps the former unflagged and
    the latter far above the threshold.

    Raises:
        ValueError: fewer than 2 scores, a score that is not finite, a negative
            ``sigmas`` or ``margin``.
    """
    scores = np.asarray(list(scores_in_distribution), dtype=np.float64)
    if scores.size < 2:
        raise ValueError(f"calibration needs at least 2 in-distribution scores, got {scores.size}")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"calibration scores {scores.tolist()} must be finite")
    if sigmas < 0 or margin < 0:
        raise ValueError(f"sigmas {sigmas!r} and margin {margin!r} must be non-negative")
    return float(max(scores.mean() + sigmas * scores.std(ddof=1), scores.max()) * (1.0 + margin))


def ood_calibration(
    scores_in_distribution: Sequence[float], *, sigmas: float = 3.0, margin: float = 0.5, source: str = ""
) -> dict[str, Any]:
    """The ``config.extra["ood"]`` entry for a bundle, from in-distribution scores."""
    scores = [float(s) for s in scores_in_distribution]
    threshold = calibrate_ood(scores, sigmas=sigmas, margin=margin)
    return {
        "score": MAIN_SCORE,
        "threshold": round(threshold, 6),
        "calibration": {
            "rule": f"max(mean + {sigmas:g} sd, max) * (1 + {margin:g})",
            "n": len(scores),
            "mean": round(float(np.mean(scores)), 6),
            "sd": round(float(np.std(scores, ddof=1)), 6),
            "max": round(max(scores), 6),
            "source": source,
        },
    }


def ood_threshold(config: Any) -> float | None:
    """The calibrated threshold of a model config (``config.extra["ood"]``), or None.

    A config without an ``"ood"`` entry has no threshold; one naming a score this version
    does not know is ignored with a warning.

    Raises:
        ValueError: the entry is malformed (quoted).
    """
    extra = getattr(config, "extra", None) or {}
    entry = extra.get("ood") if isinstance(extra, Mapping) else None
    if entry is None:
        return None
    if not isinstance(entry, Mapping) or "threshold" not in entry or "score" not in entry:
        raise ValueError(f"config.extra['ood'] {dict(entry) if isinstance(entry, Mapping) else entry!r} "
                         "must be a mapping with 'score' and 'threshold'")  # fmt: skip
    if entry["score"] not in SCORES:
        logger.warning("OOD score %r is unknown here (known: %s); no OOD flag", entry["score"], sorted(SCORES))
        return None
    threshold = entry["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ValueError(f"config.extra['ood']['threshold'] {threshold!r} must be a finite number")
    return float(threshold)


def ood_flag(score: float, threshold: float | None) -> bool | None:
    """True when ``score`` exceeds ``threshold`` (a NaN score is flagged); None without one."""
    if threshold is None:
        return None
    return bool(not score <= threshold)
