"""What a volume is: size, geometry, modality, intensities and sanity warnings."""

from __future__ import annotations

from typing import Any


from .scan_checks import guess_modality, intensity_range, sanity_warnings
from ..types import Volume


def describe(volume: Volume) -> dict[str, Any]:
    """A JSON-ready summary; geometry in (z, y, x) order, lengths in mm."""
    low, high = intensity_range(volume)
    summary: dict[str, Any] = {
        "source": volume.meta.get("source", ""),
        "format": volume.meta.get("format", ""),
        "shape_zyx": list(volume.shape),
        "spacing_zyx_mm": list(volume.spacing),
        "origin_zyx_mm": list(volume.origin),
        "direction_zyx": [list(row) for row in volume.geometry.direction],
        "dtype": str(volume.array.dtype),
        "modality": guess_modality(volume),
        "intensity_range": [low, high],
        "physical_size_mm": [n * s for n, s in zip(volume.shape, volume.spacing)],
        "voxel_volume_ml": volume.geometry.voxel_volume_ml(),
        "warnings": sanity_warnings(volume),
    }
    if volume.meta.get("series"):
        summary["series_uid"] = volume.meta.get("series_uid", "")
        summary["series"] = volume.meta["series"]
    return summary


def format_description(summary: dict[str, Any]) -> str:
    """Plain-text rendering of :func:`describe` for terminals and panels."""

    def numbers(values) -> str:
        return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"

    lines = [
        f"source     {summary['source']} [{summary['format']}]",
        f"size       {' x '.join(map(str, summary['shape_zyx']))} voxels (z, y, x), {summary['dtype']}",
        f"spacing    {numbers(summary['spacing_zyx_mm'])} mm",
        f"origin     {numbers(summary['origin_zyx_mm'])} mm",
        "direction  " + "\n           ".join(numbers(row) for row in summary["direction_zyx"]),
        f"extent     {numbers(summary['physical_size_mm'])} mm",
        f"modality   {summary['modality']}",
        f"intensity  {summary['intensity_range'][0]:.6g} .. {summary['intensity_range'][1]:.6g}",
    ]
    if summary.get("series"):
        lines.append(f"series     {summary['series_uid']} (of {len(summary['series'])} in the folder)")
        for item in summary["series"]:
            lines.append(f"           - {item['uid']}: {item['n_files']} files, {item['modality']} {item['description']}".rstrip())
    for warning in summary["warnings"]:
        lines.append(f"warning    {warning}")
    return "\n".join(lines)


