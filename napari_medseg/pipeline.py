"""The headless jobs behind ``medseg segment`` (and the panel's export): run and write."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

from .control import ProgressCallback, StopCheck
from .types import Volume

logger = logging.getLogger(__name__)
UNCERTAINTY_METHODS = ("none", "mc-dropout", "tta", "ensemble")


def run_segmentation(
    volume: Volume,
    model: Any,
    output_dir: str | Path,
    stem: str,
    *,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int | None = None,
    postprocessing: bool = True,
    uncertainty: str = "none",
    samples: int = 10,
    ensemble: Sequence[Any] = (),
    gradcam: Sequence[str | int] = (),
    gradcam_method: str = "gradcam",
    progress: ProgressCallback = None,
    should_stop: StopCheck = None,
) -> dict[str, Path]:
    """Segment ``volume`` and write everything asked for into ``output_dir``, on the input's grid.

    Writes ``<stem>_seg.nii.gz`` (the bundle's label values, ``config.label_values``: class
    indices unless the bundle maps them, e.g. to FreeSurfer ids; uint8 or uint16), ``<stem>_prob.nii.gz`` (float32, classes on the
    last axis), with ``uncertainty`` also ``<stem>_entropy/_aleatoric/_epistemic.nii.gz``
    (nats), for each ``gradcam`` class ``<stem>_gradcam_<class>.nii.gz``, and always
    ``<stem>_report.json`` (model, classes, volumes in mL, components, OOD score and flag,
    timings, device).

    Args:
        ensemble: further models for ``uncertainty="ensemble"`` (with ``model``).

    Returns:
        Output name ("seg", "prob", "entropy", ..., "gradcam_<class>", "report") -> path.
    """
    from .checks import model_warnings
    from .explain.scan import class_index, explain_scan
    from .inference import segment
    from .io import write_volume
    from .report import build_report, write_json
    from .uncertainty.ood import assess_ood

    if uncertainty not in UNCERTAINTY_METHODS:
        raise ValueError(f"uncertainty {uncertainty!r} must be one of {UNCERTAINTY_METHODS}")
    config = model.config
    targets = [(target, config.class_names[class_index(config.class_names, target)]) for target in gradcam]
    output_dir = Path(output_dir)
    extra: dict[str, Any] = {}

    def inspect(probabilities, prepared) -> None:
        extra["ood"] = assess_ood(probabilities, config, spacing=prepared.geometry.spacing).as_dict()

    result = segment(
        volume, model, device=device, precision=precision, batch_size=batch_size,
        postprocessing=postprocessing, progress=progress, should_stop=should_stop, inspect=inspect,
    )  # fmt: skip
    paths = {
        "seg": write_volume(output_dir / f"{stem}_seg.nii.gz", config.encode_labels(result.labels), volume, kind="labels"),
        "prob": write_volume(output_dir / f"{stem}_prob.nii.gz", result.probabilities, volume, kind="image"),
    }
    if uncertainty != "none":
        from .uncertainty import estimate_uncertainty

        models = [model, *ensemble] if uncertainty == "ensemble" else model
        estimate = estimate_uncertainty(
            volume, models, method=uncertainty, samples=samples, device=device, precision=precision,
            batch_size=batch_size, postprocessing=postprocessing, progress=progress, should_stop=should_stop,
        )  # fmt: skip
        for key, values in (("entropy", estimate.total), ("aleatoric", estimate.aleatoric), ("epistemic", estimate.epistemic)):
            paths[key] = write_volume(output_dir / f"{stem}_{key}.nii.gz", values, volume, kind="image")
        extra["uncertainty"] = {**estimate.report(), "units": "nats", "models": [_name(m) for m in ([model, *ensemble] if uncertainty == "ensemble" else [model])]}
        extra["ood"] = {**extra.get("ood", {}), "foreground_epistemic": estimate.ood.foreground_epistemic}
    if targets:
        extra["gradcam"] = {"method": gradcam_method, "layer": config.gradcam_layer or "architecture default", "classes": []}
        for target, name in targets:
            start = time.perf_counter()
            cam = explain_scan(volume, model, target_class=target, method=gradcam_method, progress=progress, should_stop=should_stop)
            safe = "".join(ch if ch.isalnum() else "_" for ch in name.lower())
            paths[f"gradcam_{safe}"] = write_volume(output_dir / f"{stem}_gradcam_{safe}.nii.gz", cam, volume, kind="image")
            extra["gradcam"]["classes"].append({"class": name, "seconds": round(time.perf_counter() - start, 2)})
    warnings = model_warnings(volume, config)
    for note in warnings:
        logger.warning("%s: %s", stem, note)
    extra["model_warnings"] = warnings
    report = build_report(volume, result, model, extra)
    report["outputs"] = {key: path.name for key, path in paths.items()}
    paths["report"] = write_json(output_dir / f"{stem}_report.json", report)
    _log_report_warnings(stem, report, model)
    return paths


def _log_report_warnings(stem: str, report: dict[str, Any], model: Any) -> None:
    """Volumes outside the model's training range and an out-of-distribution verdict, logged."""
    for name, entry in report.get("volumes_outside_training_range", {}).items():
        logger.warning("%s: %s %.1f mL lies outside the range the model was trained on (%.1f-%.1f mL)",
                       stem, name, entry["ml"], *entry["range"])  # fmt: skip
    ood = report.get("ood", {})
    if ood.get("flag"):
        logger.warning("%s looks out of distribution for %s (score %.3f > %.3f)", stem, _name(model),
                       ood["score"], ood["threshold"])  # fmt: skip


def _name(model: Any) -> str:
    return (getattr(model, "bundle_meta", {}) or {}).get("name", type(model).__name__)
