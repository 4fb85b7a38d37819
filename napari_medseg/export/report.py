"""The JSON report written beside every segmentation (``<stem>_report.json``)."""

from __future__ import annotations

import datetime
import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..types import Volume

MAX_COMPONENTS_PER_CLASS = 50


def model_identity(model: Any) -> dict[str, Any]:
    """Name, id, version, weights hash and architecture of a loaded bundle."""
    meta = getattr(model, "bundle_meta", {}) or {}
    config = model.config
    return {
        "name": meta.get("name", ""),
        "id": meta.get("id", ""),
        "version": meta.get("version", ""),
        "parent_id": meta.get("parent_id"),
        "weights_sha256": meta.get("weights_sha256", ""),
        "architecture": config.architecture,
        "spatial_dims": config.spatial_dims,
        "path": str(getattr(model, "bundle_path", "")),
    }


def build_report(volume: Volume, segmentation, model: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything a reader of the outputs needs: model, classes and the label value written
    for each, volumes (mL), left/right asymmetry of paired structures (percent), components,
    timings.

    Args:
        volume: the input scan (its geometry gives voxel volumes and centroids in mm).
        segmentation: a :class:`~napari_medseg.inference.Segmentation` on ``volume``'s grid.
        model: the model that produced it (a loaded bundle).
        extra: further sections (uncertainty, OOD, Grad-CAM) merged in.
    """
    from ..quantify import asymmetry_indices, class_volumes_ml, connected_components

    names = list(segmentation.class_names)
    volumes = class_volumes_ml(segmentation.labels, volume.geometry, names)
    components = connected_components(segmentation.labels, volume.geometry, names)
    per_class: dict[str, list] = {name: [] for name in names[1:]}
    for row in components:
        if len(per_class[row["class"]]) < MAX_COMPONENTS_PER_CLASS:
            per_class[row["class"]].append(row)
    report = {
        "napari_medseg_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "input": {
            "source": volume.meta.get("source", ""),
            "shape_zyx": list(volume.shape),
            "spacing_zyx_mm": list(volume.spacing),
            "origin_zyx_mm": list(volume.origin),
            "direction_zyx": [list(row) for row in volume.geometry.direction],
            "modality": volume.modality,
            "series_uid": volume.meta.get("series_uid"),
            "warnings": volume.warnings,
        },
        "model": model_identity(model),
        "classes": names,
        "label_values": dict(zip(names, model.config.label_values)),
        "volume_ml": volumes,
        "components": per_class,
        "component_counts": {name: sum(1 for r in components if r["class"] == name) for name in names[1:]},
        "postprocess": segmentation.postprocess,
        "timings_s": {k: round(v, 3) for k, v in segmentation.timings.items()},
        "device": segmentation.device,
        "precision": segmentation.precision,
    }
    outside = volumes_outside_expected(volumes, model.config)
    if outside:
        report["volumes_outside_training_range"] = outside
    asymmetry = asymmetry_indices(volumes)
    if asymmetry:
        report["asymmetry_index_percent"] = {k: round(v, 2) for k, v in asymmetry.items()}
    if extra:
        report.update(extra)
    return report


def volumes_outside_expected(volumes_ml: Mapping[str, float], config: Any) -> dict[str, dict[str, Any]]:
    """Classes whose volume lies outside ``config.extra["expected_volume_ml"]`` (the range
    over the anatomies the model was trained on): ``{name: {"ml", "range"}}``."""
    expected = config.extra.get("expected_volume_ml") or {}
    out = {}
    for name, value in volumes_ml.items():
        bounds = expected.get(name)
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            out[name] = {"ml": round(float(value), 2), "range": [float(b) for b in bounds]}
    return out


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Write JSON atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    temporary = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.part"
    try:
        temporary.write_text(json.dumps(data, indent=2, default=_json_default))
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
