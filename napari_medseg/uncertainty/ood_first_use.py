"""The OOD threshold of an external model, calibrated on first use or from given scans.

Our bundles carry a threshold for the foreground-entropy score (:mod:`.ood`); an nnU-Net
folder or a MONAI bundle does not, and its folder is not ours to write into. So its first
:data:`~napari_medseg.models.external.ood_store.FIRST_USE_SCANS` segmented scans calibrate
it, in the model's store in the user's data folder
(:mod:`napari_medseg.models.external.ood_store`):

- a scan counts when no other test flags it (stated modality, Hounsfield air, brain
  volume: :mod:`.ood_signals`) and the model predicts some foreground (an empty prediction
  scores 1.0, which would open the threshold to everything); each scan counts once
  (:func:`scan_key`);
- until the count is reached the score is reported without a flag, and the result says
  ``calibrating: k of N scans seen``;
- then the threshold is :func:`~.ood.calibrate_ood` of those scores, stored with its
  calibration (scores, n, date), and from then on the score is tested against it exactly
  as for our bundles, in this session (the model's config takes it) and whenever the
  model is opened again.

First use assumes the first scans are ones the model was made for; :func:`calibrate_external`
(``medseg models calibrate-ood MODEL SCAN...``) calibrates from chosen scans in one go instead.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..types import Volume
from .ood import OODResult, assess_ood, ood_calibration
from .ood_signals import calibrating_signal, decide, score_signal

logger = logging.getLogger(__name__)

__all__ = ["assess_model_ood", "calibrate_external", "ood_inspector", "scan_key"]


def assess_model_ood(
    probabilities: np.ndarray,
    model: Any,
    *,
    spacing: Sequence[float],
    scan: Volume | None = None,
    channel_axis: int = 0,
    within: np.ndarray | None = None,
) -> OODResult:
    """:func:`~.ood.assess_ood` of a plain prediction with ``model.config``; for an external
    model without a threshold yet, the scan's score is recorded on first use (see the module
    docstring) and the result says how far calibration is. When this scan completes it (or
    another process did), ``model.config.extra["ood"]`` takes the threshold.

    Args:
        probabilities: the model's plain prediction, e.g. (K, z, y, x), background first.
        spacing: its grid's voxel size in mm.
        scan: the scan as read (its modality, raw intensities and, to count it once, its
            source file or voxels).
        within: the brain the model's locator found, (z, y, x) bool on the same grid:
            the brain-volume test counts only its voxels.
    """
    result = assess_ood(probabilities, model.config, spacing=spacing, channel_axis=channel_axis, scan=scan,
                        within=within)  # fmt: skip
    store = getattr(model, "ood_store", None)
    if store is None or result.threshold is not None:
        return result
    from ..models.external.ood_store import FIRST_USE_SCANS, read_store, record_score

    why_not = _why_not_counted(result)
    try:
        if why_not:
            state = read_store(store)
        else:
            state = record_score(store, scan_key(scan, probabilities), result.score, calibrate=_calibration,
                                 model=model.bundle_path, kind=_kind(model), source=_source(scan), needed=FIRST_USE_SCANS)  # fmt: skip
    except OSError as err:
        logger.warning("the OOD score of this scan was not recorded for calibration: %s", err)
        return result
    if state.get("ood") is not None:
        return _with_threshold(result, _learn(model, state["ood"]))
    seen = len(state["scans"])
    signals = _replace_score(result, calibrating_signal(result.score, seen, FIRST_USE_SCANS, why_not))
    return replace(result, signals=signals, calibrating=f"{seen} of {FIRST_USE_SCANS} scans seen")


def ood_inspector(model: Any, scan: Volume, keep: Callable[[OODResult], None]) -> Callable[..., None]:
    """``segment``'s ``inspect`` callback: :func:`assess_model_ood` of the network's own
    prediction on the scan's part of the model grid, handed to ``keep``; the brain-volume
    test counts the voxels inside the brain the model's locator found, when it has one."""

    def inspect(probabilities: np.ndarray, prepared: Any, brain: np.ndarray | None) -> None:
        keep(assess_model_ood(prepared.scan_part(probabilities), model, spacing=prepared.geometry.spacing, scan=scan,
                              within=prepared.scan_part(brain)))  # fmt: skip

    return inspect


def calibrate_external(
    model: Any,
    scans: Sequence[str | Path | Volume],
    *,
    device: Any = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Calibrate an external model's threshold from in-distribution ``scans`` in one go,
    replacing what its store held (first-use scores included); the model's config takes it.

    Each scan is segmented (plain prediction); those another test flags or in which nothing
    is predicted are left out, and the same scan given twice counts once.

    Args:
        scans: files or DICOM folders (read one at a time), or volumes.
        progress: called with (scans done, scans) after each.

    Returns:
        The ``config.extra["ood"]`` entry (threshold and calibration: rule, n, mean, sd, max,
        scores, date) and one line per scan left out, saying why.

    Raises:
        ValueError: ``model`` has no store (not external, or no user data folder), or fewer
            than 2 scans remain.
        OSError: the store cannot be written.
    """
    from ..inference import segment
    from ..io import read_volume
    from ..models.external.ood_store import save_calibration

    store = getattr(model, "ood_store", None)
    if store is None:
        raise ValueError(f"{getattr(model, 'bundle_path', model)!r} has no OOD store (nnU-Net folders and MONAI bundles have one)")
    found: dict[str, dict[str, Any]] = {}
    left_out: list[str] = []
    bare = replace(model.config, extra={k: v for k, v in model.config.extra.items() if k != "ood"})
    for done, item in enumerate(scans, start=1):
        volume = item if isinstance(item, Volume) else read_volume(item)
        seen: dict[str, OODResult] = {}

        def inspect(probabilities, prepared, brain, volume=volume, seen=seen) -> None:
            seen["ood"] = assess_ood(prepared.scan_part(probabilities), bare, spacing=prepared.geometry.spacing, scan=volume,
                                     within=prepared.scan_part(brain))  # fmt: skip

        segment(volume, model, device=device, inspect=inspect)
        key, why_not = scan_key(volume), _why_not_counted(seen["ood"])
        if why_not or key in found:
            left_out.append(f"{_source(volume) or f'scan {done}'}: {why_not or 'given twice'}")
        else:
            found[key] = {"score": round(seen["ood"].score, 6), "source": _source(volume)}
        if progress is not None:
            progress(done, len(scans))
    if len(found) < 2:
        raise ValueError(f"calibration needs at least 2 scans that no other test flags; got {len(found)} "
                         f"(left out: {'; '.join(left_out) or 'none'})")  # fmt: skip
    entry = _calibration([scan["score"] for scan in found.values()], source=f"{len(found)} scans given for calibration")
    save_calibration(store, entry, found, model=model.bundle_path, kind=_kind(model))
    _learn(model, entry)
    return entry, left_out


def scan_key(scan: Volume | None, probabilities: np.ndarray | None = None) -> str:
    """sha256 (hex) naming a scan: its source file's absolute path, size and modification
    time when it was read from one that is still there (cheap), else its voxels, shape,
    dtype and spacing (read slice by slice); without a scan, the prediction's bytes."""
    digest = hashlib.sha256()
    source = Path(scan.meta.get("source") or "") if scan is not None else None
    if source is not None and source.name and source.exists():
        stat = source.stat()
        digest.update(f"file\0{source.absolute()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{scan.shape}".encode())
        return digest.hexdigest()
    array = scan.array if scan is not None else probabilities
    spacing = scan.spacing if scan is not None else ()
    digest.update(f"voxels\0{array.shape}\0{array.dtype}\0{spacing}".encode())
    for index in range(array.shape[0]):
        digest.update(np.ascontiguousarray(array[index]).data)
    return digest.hexdigest()


def _why_not_counted(result: OODResult) -> str:
    """Why a scan may not calibrate the threshold ("" when it may)."""
    if result.flag:
        return "flagged by " + result.describe()
    if result.foreground_fraction == 0:
        return "nothing predicted"
    return ""


def _calibration(scores: Sequence[float], source: str = "first use") -> dict[str, Any]:
    """The ``config.extra["ood"]`` entry for ``scores``, with the scores and the date."""
    entry = ood_calibration(scores, source=source)
    entry["calibration"].update(scores=[round(float(s), 6) for s in scores],
                                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))  # fmt: skip
    return entry


def _learn(model: Any, entry: dict[str, Any]) -> float:
    """Put ``entry`` into ``model.config.extra["ood"]``; returns its threshold."""
    model.config = replace(model.config, extra={**model.config.extra, "ood": entry})
    return float(entry["threshold"])


def _with_threshold(result: OODResult, threshold: float) -> OODResult:
    signals = _replace_score(result, score_signal(result.score, threshold))
    return replace(result, threshold=threshold, flag=decide(signals), signals=signals)


def _replace_score(result: OODResult, signal) -> tuple:
    """``result``'s signals with its ``"score"`` test replaced by ``signal``."""
    return tuple(signal if s.name == "score" else s for s in result.signals)


def _kind(model: Any) -> str:
    return str(model.config.extra.get("external", ""))


def _source(scan: Volume | None) -> str:
    return Path(scan.meta.get("source") or "").name if scan is not None else ""
