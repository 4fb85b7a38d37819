"""Correct: a sparse corrections layer (0 = not annotated, k+1 = class k), auto-saved."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QComboBox, QFormLayout, QGroupBox, QPushButton

from ..layers import corrections_layer, corrections_layer_name

AUTOSAVE_DELAY_MS = 2000
BACKGROUND_COLOR = (0.55, 0.55, 0.55, 1.0)  # painted background must be visible


class CorrectSection(QGroupBox):
    def __init__(self, panel) -> None:
        super().__init__("Correct")
        self.panel = panel
        self.create_button = QPushButton("Create / open corrections layer")
        self.class_combo = QComboBox()
        self.class_combo.setToolTip("Class painted by the brush")
        self.accept_button = QPushButton("Accept prediction in this slice")
        form = QFormLayout(self)
        form.addRow(self.create_button)
        form.addRow("Paint", self.class_combo)
        form.addRow(self.accept_button)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(AUTOSAVE_DELAY_MS)
        self._timer.timeout.connect(self._on_autosave_due)
        self._dirty: set[str] = set()
        self.create_button.clicked.connect(self._on_create_clicked)
        self.accept_button.clicked.connect(self._on_accept_clicked)
        self.class_combo.currentIndexChanged.connect(self._on_class_chosen)
        panel.session.on_model_changed(self._on_model_changed)
        panel.session.connect("save_corrections", self.autosave_now)
        self._on_model_changed(panel.session.model)

    # helpers -------------------------------------------------------------------------------
    def class_names(self) -> list[str]:
        model = self.panel.session.model
        return list(model.config.class_names) if model is not None else []

    def layer_name(self, image) -> str:
        return corrections_layer_name(image)

    def corrections_layer(self, image=None):
        image = image or self.panel.selected_image()
        return None if image is None else corrections_layer(self.panel.viewer, image)

    # callbacks -----------------------------------------------------------------------------
    def _on_model_changed(self, model) -> None:
        self.class_combo.clear()
        if model is not None:
            self.class_combo.addItems(list(model.config.class_names))

    def _on_create_clicked(self) -> None:
        self.create()

    def create(self):
        """Add (or restore from the autosave) the corrections layer of the selected image."""
        from napari.utils.notifications import show_info, show_warning

        from ...contributions.layers import to_layer_layout, volume_from_layer
        from ..autosave import load_corrections
        from ..layers import grid_kwargs

        panel = self.panel
        image = panel.selected_image()
        if image is None or panel.session.model is None:
            show_warning("Choose an image layer and a model first.")
            return None
        existing = self.corrections_layer(image)
        if existing is not None:
            return existing
        volume = volume_from_layer(image)
        source = image.metadata.get("medseg", {}).get("source", image.name)
        data = load_corrections(volume, source)
        if data is not None:
            show_info(f"Restored {int((data > 0).sum())} annotated voxels of {image.name} from the autosave")
        else:
            data = np.zeros(volume.shape, np.uint8)
        data = to_layer_layout(data, image.metadata)
        layer = panel.viewer.add_labels(
            data, name=self.layer_name(image), colormap=self._colormap(), opacity=0.8, **grid_kwargs(image)
        )
        layer.metadata["medseg"]["class_names"] = self.class_names()
        layer.metadata["medseg"]["corrections"] = True
        layer.brush_size = 5
        layer.mode = "paint"
        self._on_class_chosen(self.class_combo.currentIndex())
        layer.events.paint.connect(lambda event=None, name=image.name: self._on_painted(name))
        layer.events.data.connect(lambda event=None, name=image.name: self._on_painted(name))
        return layer

    def _colormap(self):
        from napari.utils.colormaps import DirectLabelColormap

        model = self.panel.session.model
        colors = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0), 1: BACKGROUND_COLOR}
        for index, rgba in enumerate(model.config.rgba_colors()):
            if index:
                colors[index + 1] = (*rgba[:3], 1.0)
        return DirectLabelColormap(color_dict=colors)

    def _on_class_chosen(self, index: int) -> None:
        layer = self.corrections_layer()
        if layer is not None and index >= 0:
            layer.selected_label = index + 1

    def _on_accept_clicked(self) -> None:
        self.accept_current_slice()

    def accept_current_slice(self) -> int:
        """Copy the segmentation of the slice on screen into the corrections (as k+1)."""
        from napari.utils.notifications import show_warning

        from ...contributions.layers import to_layer_layout

        panel = self.panel
        image = panel.selected_image()
        layer = self.corrections_layer(image) or self.create()
        result = panel.session.segmentations.get(image.name) if image is not None else None
        if layer is None or result is None:
            show_warning("Segment the image first.")
            return 0
        axis = panel.viewer.dims.not_displayed[-1] if panel.viewer.dims.not_displayed else 0
        axis = axis - (panel.viewer.dims.ndim - 3)
        index = int(round(layer.world_to_data(panel.viewer.dims.point)[axis]))
        index = min(max(index, 0), layer.data.shape[axis] - 1)
        region = [slice(None)] * 3
        region[axis] = index
        data = layer.data
        data[tuple(region)] = to_layer_layout(result.labels, layer.metadata)[tuple(region)] + 1
        layer.data = data
        self._on_painted(image.name)
        return int(np.prod([s for a, s in enumerate(data.shape) if a != axis]))

    def _on_painted(self, image_name: str) -> None:
        self._dirty.add(image_name)
        self._timer.start()

    def _on_autosave_due(self) -> None:
        self.autosave_now()

    def autosave_now(self) -> list:
        """Write every changed corrections layer now (also used on close)."""
        from ...contributions.layers import from_layer_layout, volume_from_layer
        from ..autosave import save_corrections

        written = []
        for name in sorted(self._dirty):
            image = next((layer for layer in self.panel.image_layers() if layer.name == name), None)
            layer = self.corrections_layer(image) if image is not None else None
            if layer is None:
                continue
            volume = volume_from_layer(image)
            source = image.metadata.get("medseg", {}).get("source", image.name)
            written.append(save_corrections(np.ascontiguousarray(from_layer_layout(np.asarray(layer.data), layer.metadata)), volume, source))
        self._dirty.clear()
        return written
