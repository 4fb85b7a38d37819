"""Result layers that share their image's grid (scale, translate, affine, geometry metadata)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..contributions.layers import to_layer_layout
from ..config import ModelConfig
from ..display import MapKind


def grid_kwargs(image_layer: Any) -> dict[str, Any]:
    """Transform and geometry metadata copied from ``image_layer`` to a result layer."""
    metadata = {"medseg": dict(image_layer.metadata.get("medseg", {}))}
    metadata["medseg"]["image_layer"] = image_layer.name
    return {
        "scale": image_layer.scale,
        "translate": image_layer.translate,
        "affine": image_layer.affine,
        "rotate": image_layer.rotate,
        "metadata": metadata,
    }


def label_colormap(config: ModelConfig):
    """A napari DirectLabelColormap with the bundle's class colours (background transparent)."""
    from napari.utils.colormaps import DirectLabelColormap

    colors: dict[int | None, Sequence[float]] = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
    for index, rgba in enumerate(config.rgba_colors()):
        if index:
            colors[index] = rgba
    return DirectLabelColormap(color_dict=colors)


def upsert_layer(viewer: Any, name: str, data: np.ndarray, kind: str, **kwargs: Any):
    """Replace the data of layer ``name`` if it exists (keeping the user's display
    settings), else add it. ``kind`` is "labels" or "image"."""
    if name in viewer.layers:
        layer = viewer.layers[name]
        layer.data = data
        for key in ("scale", "translate", "affine", "metadata"):
            if key in kwargs:
                setattr(layer, key, kwargs[key])
        if kind == "labels" and "colormap" in kwargs:
            layer.colormap = kwargs["colormap"]
        return layer
    if kind == "labels":
        return viewer.add_labels(data, name=name, **kwargs)
    return viewer.add_image(data, name=name, **kwargs)


def show_segmentation(viewer: Any, image_layer: Any, labels: np.ndarray, config: ModelConfig):
    """Labels layer "<image> segmentation" with the bundle's class names and colours."""
    layer = upsert_layer(
        viewer,
        f"{image_layer.name} segmentation",
        to_layer_layout(labels, image_layer.metadata),
        "labels",
        colormap=label_colormap(config),
        opacity=0.5,
        **grid_kwargs(image_layer),
    )
    layer.metadata["medseg"]["class_names"] = list(config.class_names)
    return layer


def show_map(viewer: Any, image_layer: Any, values: np.ndarray, name: str, *, kind: MapKind, opacity: float = 0.9, contrast_limits=None):  # fmt: skip
    """A float map (probability, uncertainty, Grad-CAM) over the scan, read at a glance.

    Its display range is :func:`~napari_medseg.display.map_contrast_limits` of the map inside
    the scan's foreground unless ``contrast_limits`` is given; its colormap (one per
    ``kind``) is transparent at the low end, so the anatomy shows where the map is low;
    its colour bar is shown.

    Args:
        values: (z, y, x) map on ``image_layer``'s grid.
        kind: "uncertainty", "gradcam" or "probability" (chooses the colormap).
    """
    from ..display import map_contrast_limits, scan_foreground

    if contrast_limits is None:
        contrast_limits = map_contrast_limits(values, scan_foreground(image_layer.data))
    layer = upsert_layer(
        viewer, name, to_layer_layout(values, image_layer.metadata), "image", colormap=map_colormap(kind), blending="translucent", opacity=opacity,
        contrast_limits=contrast_limits, **grid_kwargs(image_layer),
    )  # fmt: skip
    show_colorbar(layer)
    return layer


def map_colormap(kind: MapKind):
    """napari colormap for a map of ``kind``: the kind's colormap with its low quarter
    fading to transparent."""
    from napari.utils.colormaps import Colormap, ensure_colormap

    from ..display import MAP_COLORMAPS, transparent_ramp

    if kind not in MAP_COLORMAPS:
        raise ValueError(f"map kind {kind!r} must be one of {sorted(MAP_COLORMAPS)}")
    base = ensure_colormap(MAP_COLORMAPS[kind])
    return Colormap(colors=transparent_ramp(base.colors), name=f"{base.name} (low transparent)", interpolation="linear")


def show_colorbar(layer: Any) -> bool:
    """Show the layer's colour bar where the installed napari has one (0.5 and later);
    returns whether it is shown."""
    colorbar = getattr(layer, "colorbar", None)
    if colorbar is None:
        return False
    colorbar.visible = True
    return True


def corrections_layer_name(image_layer: Any) -> str:
    """The name of the Labels layer holding the corrections painted on ``image_layer``."""
    return f"{image_layer.name} corrections"


def corrections_layer(viewer: Any, image_layer: Any):
    """The corrections layer of ``image_layer`` in ``viewer``, or None."""
    name = corrections_layer_name(image_layer)
    return viewer.layers[name] if name in viewer.layers else None
