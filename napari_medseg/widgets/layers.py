"""Result layers that share their image's grid (scale, translate, affine, geometry metadata)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..config import ModelConfig


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
        labels,
        "labels",
        colormap=label_colormap(config),
        opacity=0.5,
        **grid_kwargs(image_layer),
    )
    layer.metadata["medseg"]["class_names"] = list(config.class_names)
    return layer


def show_map(viewer: Any, image_layer: Any, values: np.ndarray, name: str, *, colormap: str = "inferno",
             blending: str = "additive", opacity: float = 0.7, contrast_limits=None):  # fmt: skip
    """A float map (probability, uncertainty, Grad-CAM) over the scan."""
    finite = values[np.isfinite(values)]
    if contrast_limits is None:
        high = float(np.percentile(finite, 99.5)) if finite.size else 1.0
        contrast_limits = (0.0, high if high > 0 else 1.0)
    return upsert_layer(
        viewer, name, values, "image", colormap=colormap, blending=blending, opacity=opacity,
        contrast_limits=contrast_limits, **grid_kwargs(image_layer),
    )  # fmt: skip
