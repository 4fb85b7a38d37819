"""The one-page summary picture of a case (``<stem>_summary.png``), read at a glance.

Top row: three orthogonal planes through the centre of the segmented foreground, the
labels over the scan in the model's class colours, at the scan's physical aspect (mm).
Bottom row: the same planes of the uncertainty map with its colour scale (nats). Right:
the volume of each class in mL, with the range the model expects
(``config.extra["expected_volume_ml"]``) drawn as an interval.

The planes are shown in the patient's frame whatever the scan's axis order: axial seen
from the feet (anterior up, the patient's right on the left, as radiology shows it),
coronal and sagittal with superior up; a scan's residual obliquity is not resampled away.
matplotlib (the ``figure`` extra) is imported only when a figure is drawn, with its
non-interactive Agg canvas: no display, no Qt.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..display import MAP_COLORMAPS, map_contrast_limits, scan_foreground
from ..types import Volume

__all__ = ["FIGURE_SUFFIX", "FigureUnavailableError", "render_summary", "require_matplotlib", "write_case_summary", "write_summary"]

FIGURE_SUFFIX = "_summary.png"
OVERLAY_ALPHA = 0.45
DPI = 100
# (name, letters at the left, right, top and bottom edges) of each plane, as drawn.
_PLANES = (("axial", "R", "L", "A", "P"), ("coronal", "R", "L", "S", "I"), ("sagittal", "A", "P", "S", "I"))


class FigureUnavailableError(ImportError):
    """matplotlib is not installed: the summary figure needs the ``figure`` extra."""


def require_matplotlib() -> None:
    """Raise :class:`FigureUnavailableError` (saying how to install it) without matplotlib."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise FigureUnavailableError(
            "the summary figure needs matplotlib: pip install 'napari-medseg[figure]'"
        ) from exc


def display_planes(array: np.ndarray, volume: Volume, centre: Sequence[int]) -> list[np.ndarray]:
    """Axial, coronal and sagittal planes of ``array`` (on ``volume``'s grid, as drawn).

    Args:
        array: (z, y, x) or (z, y, x, C) values on ``volume``'s grid.
        volume: the scan (its direction decides which array axis is which patient axis).
        centre: (S, P, L) indices of the planes in the patient-ordered grid
            (see :func:`foreground_centre`).

    Returns:
        Three 2D (or 2D + C) views, rows top to bottom, columns left to right.
    """
    transform, _ = _patient_order(volume)
    ordered = transform.apply(array, -1 if array.ndim == 4 else None)  # axes: to S, to P, to L
    s, p, left = (int(c) for c in centre)
    return [ordered[s], ordered[:, p][::-1], ordered[:, :, left][::-1]]  # superior up in the last two


def foreground_centre(labels: np.ndarray, volume: Volume) -> tuple[int, int, int]:
    """(S, P, L) indices of the centre of the bounding box of ``labels > 0``; of the scan's
    foreground when nothing is labelled; the middle of the grid when the scan is constant."""
    transform, shape = _patient_order(volume)
    for mask in (np.asarray(labels) > 0, scan_foreground(volume.array)):
        ordered = transform.apply(mask)
        if ordered.any():
            profiles = (ordered.any(axis=(1, 2)), ordered.any(axis=(0, 2)), ordered.any(axis=(0, 1)))
            return tuple(int((np.argmax(p) + len(p) - 1 - np.argmax(p[::-1])) // 2) for p in profiles)
    return tuple(n // 2 for n in shape)


def _patient_order(volume: Volume):
    """The permutation/flips that order ``volume``'s axes as (to S, to P, to L): index 0 of
    the first axis is inferior, so drawn planes flip it to put superior up."""
    from ..preprocess.orientation import reorient

    probe = Volume(array=np.empty((1, 1, 1), np.uint8), geometry=volume.geometry)
    _, transform = reorient(probe, "LPS")
    shape = tuple(volume.shape[transform.permutation[a]] for a in range(3))
    return transform, shape


def render_summary(
    volume: Volume,
    labels: np.ndarray,
    config: Any,
    *,
    volumes_ml: Mapping[str, float],
    uncertainty: np.ndarray | None = None,
    probabilities: np.ndarray | None = None,
    uncertainty_title: str = "uncertainty",
    title: str = "",
    notes: Sequence[str] = (),
):
    """Draw the summary of one case; returns a matplotlib ``Figure`` (Agg canvas).

    Args:
        volume: the scan, (z, y, x).
        labels: (z, y, x) class indices of ``config`` (0 = background) on the scan's grid.
        config: the model's :class:`~napari_medseg.config.ModelConfig` (class names,
            colours, ``extra["expected_volume_ml"]``: class -> [low, high] mL).
        volumes_ml: class name -> volume in mL (background left out).
        uncertainty: (z, y, x) map in nats on the scan's grid (e.g. the total uncertainty
            of sampling); its colour scale comes from the whole map inside the foreground.
        probabilities: (z, y, x, K) class probabilities, used when ``uncertainty`` is None:
            their entropy is computed on the three drawn planes only.
        uncertainty_title: what produced the map, shown above it.
        title, notes: the headline and lines under it (model, OOD verdict, ...).

    Raises:
        FigureUnavailableError: matplotlib is missing.
        ValueError: ``labels`` or a map does not have the scan's shape.
    """
    require_matplotlib()
    from matplotlib.figure import Figure

    _check_shape("labels", labels, volume.shape)
    for name, values in (("uncertainty", uncertainty), ("probabilities", probabilities)):
        if values is not None:
            _check_shape(name, values, volume.shape)
    centre = foreground_centre(labels, volume)
    maps = _uncertainty_planes(volume, centre, uncertainty, probabilities)
    figure = Figure(figsize=(13.0, 7.2 if maps else 4.4), dpi=DPI, layout="constrained")
    rows = 2 if maps else 1
    grid = figure.add_gridspec(rows, 5, width_ratios=[1, 1, 1, 0.06, 1.25])
    _draw_overlays(figure, [grid[0, i] for i in range(3)], volume, labels, config, centre)
    if maps:
        _draw_maps(figure, [grid[1, i] for i in range(3)], grid[1, 3], maps, uncertainty_title)
    _draw_volumes(figure.add_subplot(grid[:, 4]), volumes_ml, config)
    headline = "\n".join([title, *notes]) if title or notes else ""
    if headline:
        figure.suptitle(headline, fontsize=11, x=0.01, ha="left")
    return figure


def write_summary(path: str | Path, volume: Volume, labels: np.ndarray, config: Any, **options: Any) -> Path:
    """Render :func:`render_summary` (same arguments) to a PNG at ``path``, atomically."""
    figure = render_summary(volume, labels, config, **options)
    path = Path(path)
    temporary = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.part"
    try:
        with open(temporary, "wb") as handle:
            figure.savefig(handle, format="png", dpi=DPI, facecolor="white")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def write_case_summary(
    path: str | Path, volume: Volume, result: Any, model: Any, *, stem: str,
    total: np.ndarray | None = None, extra: Mapping[str, Any] | None = None,
) -> Path:  # fmt: skip
    """The summary figure of one segmented case, as ``medseg segment --figure`` writes it.

    Args:
        path: the PNG to write.
        volume: the scan.
        result: its :class:`~napari_medseg.inference.Segmentation` (``labels`` as class
            indices; ``probabilities`` (z, y, x, K) still held when ``total`` is None).
        model: the loaded bundle (name, version, classes, colours, expected volumes).
        stem: the case's name, in the headline.
        total: the total uncertainty (z, y, x, nats) of sampling, when it was run;
            otherwise the entropy of the one-pass probabilities is shown, named as such.
        extra: the report's sections so far (``uncertainty``, ``ood``).
    """
    from ..quantify import class_volumes_ml
    from .report import model_identity

    extra = extra or {}
    identity = model_identity(model)
    names = list(model.config.class_names)
    if total is not None:
        sampling = extra.get("uncertainty", {})
        label = f"total uncertainty ({sampling.get('method', 'sampling')}, {sampling.get('samples', '?')} samples)"
    else:
        label = "entropy of the probabilities (one pass, no sampling)"
    return write_summary(
        path, volume, result.labels, model.config,
        volumes_ml=class_volumes_ml(result.labels, volume.geometry, names),
        uncertainty=total, probabilities=None if total is not None else result.probabilities,
        uncertainty_title=label, title=f"{stem}: {identity['name'] or identity['architecture']} v{identity['version']}",
        notes=[line for line in (_ood_line(extra.get("ood")),) if line],
    )  # fmt: skip


def _ood_line(ood: Mapping[str, Any] | None) -> str:
    """The out-of-distribution verdict in one line ("" without an assessment)."""
    if not ood or ood.get("score") is None:
        return ""
    threshold = ood.get("threshold")
    verdict = {True: "OUT OF DISTRIBUTION: do not trust this result", False: "within the training distribution"}.get(
        ood.get("flag"), "no calibrated threshold"
    )
    bound = f" (threshold {threshold:.3f})" if threshold is not None else ""
    return f"OOD score {ood['score']:.3f}{bound}: {verdict}"


def _check_shape(name: str, values: np.ndarray, shape: tuple[int, ...]) -> None:
    if tuple(np.shape(values)[:3]) != tuple(shape) or np.ndim(values) not in ((4,) if name == "probabilities" else (3,)):
        raise ValueError(f"{name} of shape {np.shape(values)} does not lie on the scan's grid {tuple(shape)}")


def _uncertainty_planes(volume, centre, uncertainty, probabilities) -> dict[str, Any] | None:
    """The three map planes, their scan planes and the map's display range, or None."""
    from ..uncertainty.decompose import entropy

    foreground = scan_foreground(volume.array)
    if uncertainty is not None:
        planes = display_planes(np.asarray(uncertainty), volume, centre)
        limits = map_contrast_limits(uncertainty, foreground)
    elif probabilities is not None:
        planes = [entropy(p, axis=-1) for p in display_planes(probabilities, volume, centre)]
        inside = np.concatenate([f.reshape(-1) for f in display_planes(foreground, volume, centre)])
        limits = map_contrast_limits(np.concatenate([p.reshape(-1) for p in planes]), inside)
    else:
        return None
    return {"planes": planes, "limits": limits, "extents": [_extent(volume, i, p.shape[:2]) for i, p in enumerate(planes)]}


def _extent(volume: Volume, plane: int, shape: tuple[int, int]) -> list[float]:
    """imshow extent in mm (left, right, bottom, top) of a drawn plane."""
    transform, _ = _patient_order(volume)
    spacing = [volume.spacing[transform.permutation[a]] for a in range(3)]
    rows_mm, cols_mm = {0: (spacing[1], spacing[2]), 1: (spacing[0], spacing[2]), 2: (spacing[0], spacing[1])}[plane]
    return [0.0, shape[1] * cols_mm, shape[0] * rows_mm, 0.0]


def _draw_overlays(figure, cells, volume: Volume, labels, config, centre) -> None:
    from ..display import contrast_limits

    low, high = contrast_limits(volume)
    colours = np.array([(*rgba[:3], OVERLAY_ALPHA if k else 0.0) for k, rgba in enumerate(config.rgba_colors())])
    scans = display_planes(volume.array, volume, centre)
    for index, (cell, scan, plane_labels) in enumerate(zip(cells, scans, display_planes(np.asarray(labels), volume, centre))):
        axes = figure.add_subplot(cell)
        extent = _extent(volume, index, scan.shape)
        axes.imshow(scan, cmap="gray", vmin=low, vmax=high, extent=extent, interpolation="nearest")
        overlay = colours[np.clip(plane_labels, 0, len(colours) - 1)]
        axes.imshow(overlay, extent=extent, interpolation="nearest")
        _frame(axes, index)
        if index == 0:
            axes.set_title("segmentation over the scan", fontsize=10, loc="left")


def _draw_maps(figure, cells, bar_cell, maps: dict[str, Any], title: str) -> None:
    low, high = maps["limits"]
    image = None
    for index, (cell, plane) in enumerate(zip(cells, maps["planes"])):
        axes = figure.add_subplot(cell)
        axes.set_facecolor("black")
        image = axes.imshow(plane, cmap=MAP_COLORMAPS["uncertainty"], vmin=low, vmax=high, interpolation="nearest",
                            extent=maps["extents"][index])  # fmt: skip
        _frame(axes, index)
        if index == 0:
            axes.set_title(title, fontsize=10, loc="left")
    colorbar = figure.colorbar(image, cax=figure.add_subplot(bar_cell))
    colorbar.set_label("nats (entropy)")


def _frame(axes, plane: int) -> None:
    """Plane name and the patient directions at the edges; no pixel ticks."""
    name, left, right, top, bottom = _PLANES[plane]
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_xlabel(name, fontsize=9)
    from matplotlib import patheffects

    outline = [patheffects.withStroke(linewidth=2.5, foreground="black")]  # readable on any colour
    style = dict(transform=axes.transAxes, color="white", fontsize=9, fontweight="bold", path_effects=outline)
    axes.text(0.02, 0.5, left, ha="left", va="center", **style)
    axes.text(0.98, 0.5, right, ha="right", va="center", **style)
    axes.text(0.5, 0.98, top, ha="center", va="top", **style)
    axes.text(0.5, 0.02, bottom, ha="center", va="bottom", **style)


def _draw_volumes(axes, volumes_ml: Mapping[str, float], config) -> None:
    """Horizontal bars in the class colours; the expected range as a grey interval behind."""
    names = [name for name in config.class_names[1:] if name in volumes_ml]
    colours = dict(zip(config.class_names, config.rgba_colors()))
    expected = config.extra.get("expected_volume_ml") or {}
    positions = np.arange(len(names))[::-1]
    legend = "expected range"
    for position, name in zip(positions, names):
        value = float(volumes_ml[name])
        bounds = expected.get(name)
        outside = bounds is not None and not bounds[0] <= value <= bounds[1]
        if bounds is not None:
            axes.barh(position, bounds[1] - bounds[0], left=bounds[0], height=0.8, color="0.88", edgecolor="0.45",
                      hatch="//", linewidth=1, label=legend)  # fmt: skip
            legend = None
        axes.barh(position, value, height=0.42, color=colours[name][:3], edgecolor="black", linewidth=1)
        axes.annotate(f"{value:.0f} mL" + ("  outside range" if outside else ""), (value, position),
                      xytext=(4, 0), textcoords="offset points", va="center", fontsize=9,
                      color="#c00000" if outside else "black", fontweight="bold" if outside else "normal")  # fmt: skip
    axes.set_yticks(positions, names)
    axes.set_xlabel("volume (mL)")
    axes.set_title("volumes", fontsize=10, loc="left")
    right = max([float(v) for v in volumes_ml.values()] + [b[1] for n, b in expected.items() if n in names] + [1.0])
    axes.set_xlim(0, right * 1.35)
    axes.spines[["top", "right"]].set_visible(False)
    axes.set_ylim(-0.6, len(names) + 0.2)  # room above the bars for the legend
    if any(name in expected for name in names):
        axes.legend(loc="upper right", fontsize=8, frameon=False)
