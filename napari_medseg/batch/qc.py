"""Quality control at a glance: a thumbnail per case and one static ``qc.html`` for the cohort.

The thumbnail shows the three mid-slices (axial, coronal, sagittal) of the scan with the
labels over it, at the scan's physical aspect, as a PNG (encoded here with zlib; no imaging
library needed). The page embeds the thumbnails as base64, lists flagged cases first, and
sorts by any column when its header is clicked (a few lines of inline JavaScript).
"""

from __future__ import annotations

import base64
import html
import struct
import zlib
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["QC_NAME", "png_bytes", "thumbnail", "write_qc_page"]

QC_NAME = "qc.html"
THUMBNAIL_HEIGHT = 96  # pixels per view
OVERLAY_ALPHA = 0.45
# Beyond this many cases the page would weigh gigabytes: later (unflagged) rows get no image.
MAX_THUMBNAILS = 2000


def thumbnail(image: np.ndarray, labels: np.ndarray, spacing: Sequence[float], colors: Mapping[int, Sequence[float]]) -> np.ndarray:
    """Mid-slices of a (z, y, x) scan with its labels over them, side by side.

    Args:
        image: (z, y, x) scan, any numeric dtype.
        labels: (z, y, x) label values, same shape.
        spacing: (z, y, x) voxel size in mm, for the aspect ratio.
        colors: label value -> RGB(A) in [0, 1]; values missing here are not drawn.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    gray = _window(np.asarray(image, dtype=np.float32))
    z, y, x = (s // 2 for s in image.shape)
    views = [  # (scan slice, label slice, (row spacing, column spacing)); z drawn upwards
        (gray[z], labels[z], (spacing[1], spacing[2])),
        (gray[:, y][::-1], labels[:, y][::-1], (spacing[0], spacing[2])),
        (gray[:, :, x][::-1], labels[:, :, x][::-1], (spacing[0], spacing[1])),
    ]
    tiles = [_resize(_overlay(g, lab, colors), step) for g, lab, step in views]
    gap = np.zeros((THUMBNAIL_HEIGHT, 2, 3), dtype=np.uint8)
    return np.concatenate([part for tile in tiles for part in (tile, gap)][:-1], axis=1)


def label_colors(config: Any) -> dict[int, tuple[float, ...]]:
    """Label value written for each class -> the bundle's colour (background left out)."""
    return {value: tuple(rgba[:3]) for value, rgba in zip(config.label_values, config.rgba_colors()) if value}


def png_bytes(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG file bytes (8-bit RGB, no filtering)."""
    height, width, _ = rgb.shape
    raw = b"".join(b"\0" + np.ascontiguousarray(rgb[row]).tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def write_qc_page(table, out: Path, thumbnail_of, figure_of=None) -> Path:
    """Write ``out/qc.html``: one row per case, flagged first, thumbnails embedded; a
    thumbnail links to the case's summary figure when it has one, else to its folder.

    Args:
        table: the cohort table (pandas DataFrame).
        out: the cohort folder.
        thumbnail_of: ``case_id -> PNG bytes or None``.
        figure_of: ``case_id -> summary figure path relative to out, or None``.
    """
    from .table import write_atomically

    rows = table.sort_values(["flagged", "case_id"], ascending=[False, True], kind="stable")
    columns = [c for c in rows.columns if c not in ("input", "folder")]
    body = []
    for index, (_, row) in enumerate(rows.iterrows()):
        png = thumbnail_of(row["case_id"]) if index < MAX_THUMBNAILS else None
        image = f'<img alt="" src="data:image/png;base64,{base64.b64encode(png).decode()}">' if png else ""
        cells = "".join(f"<td>{_cell(row[c])}</td>" for c in columns)
        css = ' class="flag"' if row.get("flagged") else ""
        figure = figure_of(row["case_id"]) if figure_of is not None else None
        link = html.escape(figure if figure else f'{row["folder"]}/')
        body.append(f'<tr{css}><td><a href="{link}">{image}</a></td>{cells}</tr>')
    header = "".join(f'<th onclick="sortBy({i + 1})">{html.escape(c)}</th>' for i, c in enumerate(columns))
    page = _PAGE.format(n=len(rows), flagged=int(rows["flagged"].astype(bool).sum()) if len(rows) else 0,
                        header=header, body="\n".join(body))  # fmt: skip
    return write_atomically(out / QC_NAME, lambda path: Path(path).write_text(page, encoding="utf-8"))


def _cell(value: Any) -> str:
    from .table import is_missing

    if is_missing(value):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _window(image: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] between the 1st and 99th percentiles (robust to bright outliers)."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return np.zeros_like(image)
    low, high = np.percentile(finite, [1, 99])
    scale = high - low if high > low else 1.0
    return np.clip((np.nan_to_num(image) - low) / scale, 0, 1)


def _overlay(gray: np.ndarray, labels: np.ndarray, colors: Mapping[int, Sequence[float]]) -> np.ndarray:
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    for value, color in colors.items():
        mask = labels == value
        if mask.any():
            rgb[mask] = (1 - OVERLAY_ALPHA) * rgb[mask] + OVERLAY_ALPHA * np.asarray(color[:3], dtype=np.float32)
    return (rgb * 255 + 0.5).astype(np.uint8)


def _resize(rgb: np.ndarray, step: Sequence[float]) -> np.ndarray:
    """Nearest-neighbour resize to THUMBNAIL_HEIGHT rows, keeping the physical aspect."""
    rows, cols = rgb.shape[:2]
    height_mm, width_mm = rows * float(step[0]), cols * float(step[1])
    width = max(1, round(THUMBNAIL_HEIGHT * width_mm / height_mm)) if height_mm > 0 else cols
    r = np.minimum((np.arange(THUMBNAIL_HEIGHT) + 0.5) * rows / THUMBNAIL_HEIGHT, rows - 1).astype(int)
    c = np.minimum((np.arange(width) + 0.5) * cols / width, cols - 1).astype(int)
    return rgb[r][:, c]


_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Cohort QC</title>
<style>
body {{ font-family: sans-serif; font-size: 13px; }}
table {{ border-collapse: collapse; }}
th {{ cursor: pointer; background: #eee; position: sticky; top: 0; }}
td, th {{ border: 1px solid #ccc; padding: 2px 6px; vertical-align: middle; }}
tr.flag td {{ background: #fff0e0; }}
</style></head><body>
<h1>Cohort QC</h1>
<p>{n} cases, {flagged} flagged (shown first). Click a column header to sort.</p>
<table id="cohort"><thead><tr><th>view</th>{header}</tr></thead>
<tbody>
{body}
</tbody></table>
<script>
function sortBy(col) {{
  const body = document.querySelector("#cohort tbody");
  const rows = Array.from(body.rows);
  const up = body.dataset.col == col && body.dataset.dir != "up";
  const key = r => {{ const t = r.cells[col].innerText; const n = parseFloat(t); return isNaN(n) ? t : n; }};
  rows.sort((a, b) => {{ const x = key(a), y = key(b); return (x > y ? 1 : x < y ? -1 : 0) * (up ? 1 : -1); }});
  rows.forEach(r => body.appendChild(r));
  body.dataset.col = col; body.dataset.dir = up ? "up" : "down";
}}
</script>
</body></html>
"""
