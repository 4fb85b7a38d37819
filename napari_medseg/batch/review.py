"""A cohort case's scan and results as napari layer-data tuples (no napari import needed).

Used by the viewer's "Open cohort" table: a row click reads the case's scan (from the
input recorded in its manifest or table row) and its written results, each layer on the
scan's grid (world coordinates in mm, as the reader gives them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from .manifest import read_manifest

__all__ = ["case_layers"]

# Outputs shown as image layers over the scan (labels go in a labels layer; the report is text).
_MAPS = ("entropy", "aleatoric", "epistemic")


def case_layers(out: str | Path, row: Mapping[str, Any]) -> list[tuple[Any, dict, str]]:
    """Layer-data tuples for one case of the cohort in ``out``: scan, labels, maps.

    Args:
        out: the cohort folder (holding ``cohort.csv``).
        row: the case's row of the cohort table (``case_id``, ``folder``, ``input``, ``series_uid``).

    Returns:
        ``[(scan, kwargs, "image"), (labels, kwargs, "labels"), (map, kwargs, "image"), ...]``,
        each map with its display range (:func:`~napari_medseg.display.map_contrast_limits`)
        and its kind in ``metadata["medseg"]["map_kind"]``;
        just the scan for a case without results (failed or pending).

    Raises:
        VolumeReadError: the scan or a result file cannot be read (named).
    """
    from ..contributions.layers import image_layer_data, to_layer_layout
    from ..display import MAP_COLORMAPS, map_contrast_limits, scan_foreground
    from ..io import read_volume

    case_dir = Path(out) / str(row.get("folder") or row["case_id"])
    source, series_uid = _input_of(case_dir, row)
    scan = read_volume(source, series_uid=series_uid)
    name = str(row["case_id"])
    layers = [image_layer_data(scan, name=name)]
    outputs = _outputs(case_dir)
    scan_kwargs = layers[0][1]
    grid = {key: scan_kwargs[key] for key in ("scale", "translate", "affine")}
    grid["metadata"] = {"medseg": {**scan_kwargs["metadata"]["medseg"], "image_layer": name}}
    if "seg" in outputs:
        labels = to_layer_layout(read_volume(case_dir / outputs["seg"]).array, grid["metadata"])
        layers.append((labels, {"name": f"{name} segmentation", "opacity": 0.5, **grid}, "labels"))
    foreground = None
    for key in (k for k in outputs if k in _MAPS or k.startswith("gradcam_")):
        values = to_layer_layout(read_volume(case_dir / outputs[key]).array, grid["metadata"])
        foreground = scan_foreground(scan.array) if foreground is None else foreground
        kind = "gradcam" if key.startswith("gradcam_") else "uncertainty"
        metadata = {"medseg": {**grid["metadata"]["medseg"], "map_kind": kind}}
        layers.append((values, {**grid, "name": f"{name} {key}", "colormap": MAP_COLORMAPS[kind], "blending": "translucent",
                                "contrast_limits": map_contrast_limits(values, foreground), "visible": False,
                                "metadata": metadata}, "image"))  # fmt: skip
    return layers


def _input_of(case_dir: Path, row: Mapping[str, Any]) -> tuple[str, str | None]:
    """The case's input as recorded by its manifest, else by the table."""
    manifest = read_manifest(case_dir) or {}
    recorded = manifest.get("input") or {}
    source = _text(recorded.get("path")) or _text(row.get("input"))
    if not source:
        raise ValueError(f"case {row['case_id']!r}: the cohort table names no input for it")
    return source, _text(recorded.get("series_uid")) or _text(row.get("series_uid"))


def _text(value: Any) -> str | None:
    """A table cell as text; None for empty cells (pandas reads them as NaN)."""
    return value if isinstance(value, str) and value else None


def _outputs(case_dir: Path) -> dict[str, str]:
    """Output key -> file name, from the case's report (the report lists what was written)."""
    reports = sorted(case_dir.glob("*_report.json"))
    if not reports:
        return {}
    try:
        report = json.loads(reports[0].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {key: name for key, name in (report.get("outputs") or {}).items() if (case_dir / name).is_file()}
