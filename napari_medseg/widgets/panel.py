"""The MedSeg dock panel.

Thin by design: it gathers inputs from the viewer, calls the core, and writes results
back to layers. This first section shows what the core read about the selected image
(geometry, modality, warnings), the same report as ``medseg info``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtWidgets import QComboBox, QLabel, QPlainTextEdit, QVBoxLayout, QWidget

if TYPE_CHECKING:
    import napari


class MedSegPanel(QWidget):
    """Dock widget; one per viewer, holding no module-level state."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer") -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("Image layer to work on")
        self.info_text = QPlainTextEdit()
        self.info_text.setReadOnly(True)
        self.info_text.setMinimumHeight(160)

        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Image"))
        layout.addWidget(self.image_combo)
        layout.addWidget(self.info_text)
        layout.addStretch(1)

        self._connect()
        self._on_layers_changed()

    # wiring -----------------------------------------------------------------
    def _connect(self) -> None:
        events = self.viewer.layers.events
        events.inserted.connect(self._on_layers_changed)
        events.removed.connect(self._on_layers_changed)
        events.reordered.connect(self._on_layers_changed)
        self.image_combo.currentTextChanged.connect(self._on_image_selected)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt naming
        self._disconnect()
        super().closeEvent(event)

    def _disconnect(self) -> None:
        events = self.viewer.layers.events
        for emitter in (events.inserted, events.removed, events.reordered):
            emitter.disconnect(self._on_layers_changed)

    # callbacks ----------------------------------------------------------------
    def image_layers(self) -> list:
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    def selected_image(self):
        name = self.image_combo.currentText()
        return next((layer for layer in self.image_layers() if layer.name == name), None)

    def _on_layers_changed(self, event=None) -> None:
        current = self.image_combo.currentText()
        names = [layer.name for layer in self.image_layers()]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)
        self.image_combo.blockSignals(False)
        self._on_image_selected(self.image_combo.currentText())

    def _on_image_selected(self, name: str) -> None:
        layer = self.selected_image()
        if layer is None:
            self.info_text.setPlainText("Open a volume (File > Open) or load the sample (File > Open Sample).")
            return
        from .._layers import volume_from_layer
        from ..info import describe, format_description

        try:
            volume = volume_from_layer(layer)
        except ValueError as exc:
            self.info_text.setPlainText(f"{layer.name}: {exc}")
            return
        summary = describe(volume)
        summary["source"] = summary["source"] or layer.metadata.get("medseg", {}).get("source", layer.name)
        summary["format"] = layer.metadata.get("medseg", {}).get("format", "layer")
        summary["warnings"] = layer.metadata.get("medseg", {}).get("warnings", summary["warnings"])
        self.info_text.setPlainText(format_description(summary))
