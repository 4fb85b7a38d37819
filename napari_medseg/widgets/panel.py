"""The MedSeg dock panel: one place from load to export.

Thin by design: sections gather inputs from the viewer, start core functions in a
background job (:mod:`.jobs`), and write results back to layers (:mod:`.layers`). All
state lives in one :class:`~.session.Session` per viewer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from .jobs import JobRunner
from .sections.correct import CorrectSection
from .sections.explain import ExplainSection
from .sections.export import ExportSection
from .sections.finetune import FinetuneSection
from .sections.model import ModelSection
from .sections.quantify import QuantifySection
from .sections.segment import SegmentSection
from .sections.uncertainty import UncertaintySection
from .session import Session
from .warmup import TORCH_IMPORTS, keep_triton_out, start_warmup, warm_imports

if TYPE_CHECKING:
    import napari


class MedSegPanel(QWidget):
    """Dock widget; one per viewer, holding no module-level state."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer") -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = Session(viewer=napari_viewer)
        keep_triton_out()  # before anything imports torch._dynamo (which would load triton)
        self.warmup = start_warmup()  # imports later jobs would otherwise do while the GUI waits
        # torch's submodules on this (the model-loading) thread, once the panel is shown
        QTimer.singleShot(0, lambda: warm_imports(TORCH_IMPORTS))

        # image chooser and what was read ---------------------------------------------
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("Image layer to work on")
        self.info_text = QPlainTextEdit()
        self.info_text.setReadOnly(True)
        self.info_text.setMaximumHeight(150)
        image_box = QGroupBox("Image")
        image_layout = QVBoxLayout(image_box)
        image_layout.addWidget(self.image_combo)
        image_layout.addWidget(self.info_text)

        # job status shared by every section ------------------------------------------
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.stop_button = QPushButton("Stop")
        self.status_label = QLabel("Ready")
        self.status_label.setWordWrap(True)
        self.jobs = JobRunner(self.progress_bar, self.stop_button, self.status_label)
        status_row = QHBoxLayout()
        status_row.addWidget(self.progress_bar, 1)
        status_row.addWidget(self.stop_button)

        self.model_section = ModelSection(self.session)
        self.segment_section = SegmentSection(self)
        self.explain_section = ExplainSection(self)
        self.uncertainty_section = UncertaintySection(self)
        self.correct_section = CorrectSection(self)
        self.finetune_section = FinetuneSection(self)
        self.quantify_section = QuantifySection(self)
        self.export_section = ExportSection(self)
        self.sections = [
            self.model_section,
            self.segment_section,
            self.explain_section,
            self.uncertainty_section,
            self.correct_section,
            self.finetune_section,
            self.quantify_section,
            self.export_section,
        ]

        content = QWidget()
        content_layout = QVBoxLayout(content)
        content_layout.addWidget(image_box)
        for section in self.sections:
            content_layout.addWidget(section)
        content_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(content)

        layout = QVBoxLayout(self)
        layout.addLayout(status_row)
        layout.addWidget(self.status_label)
        layout.addWidget(scroll, 1)

        self._connect()
        self._on_layers_changed()

    # wiring -----------------------------------------------------------------------------
    def _connect(self) -> None:
        events = self.viewer.layers.events
        events.inserted.connect(self._on_layers_changed)
        events.removed.connect(self._on_layers_changed)
        events.reordered.connect(self._on_layers_changed)
        self.image_combo.currentTextChanged.connect(self._on_image_selected)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt naming
        self.correct_section.autosave_now()
        self._disconnect()
        super().closeEvent(event)

    def _disconnect(self) -> None:
        events = self.viewer.layers.events
        for emitter in (events.inserted, events.removed, events.reordered):
            emitter.disconnect(self._on_layers_changed)

    def controls(self) -> list[QWidget]:
        """Widgets locked while a job runs."""
        return [self.image_combo, *self.sections]

    # queries ------------------------------------------------------------------------------
    def image_layers(self) -> list:
        from napari.layers import Image

        return [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, Image) and "image_layer" not in layer.metadata.get("medseg", {})
        ]

    def selected_image(self):
        name = self.image_combo.currentText()
        return next((layer for layer in self.image_layers() if layer.name == name), None)

    # callbacks ------------------------------------------------------------------------------
    def _on_layers_changed(self, event=None) -> None:
        current = self.image_combo.currentText()
        names = [layer.name for layer in self.image_layers()]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)
        self.image_combo.blockSignals(False)
        if self.image_combo.currentText() != current or event is None:
            self._on_image_selected(self.image_combo.currentText())
        self.explain_section.refresh_regions()

    def _on_image_selected(self, name: str) -> None:
        layer = self.selected_image()
        if layer is None:
            self.info_text.setPlainText("Open a volume (File > Open) or load the sample (File > Open Sample).")
            return
        from ..contributions.layers import volume_from_layer
        from ..io.describe import describe, format_description

        try:
            volume = volume_from_layer(layer)
        except ValueError as exc:
            self.info_text.setPlainText(f"{layer.name}: {exc}")
            return
        stored = layer.metadata.get("medseg", {})
        summary = describe(volume)
        summary["source"] = Path(stored.get("source", layer.name)).name  # the name, not where it lives
        summary["format"] = stored.get("format", "layer")
        summary["warnings"] = stored.get("warnings", summary["warnings"])
        self.info_text.setPlainText(format_description(summary))

    def on_segmentation(self, image_name: str, table=None) -> None:
        """Called after a segmentation is shown: refresh the volume table (computed by the
        job when given, so the GUI thread only draws)."""
        result = self.session.segmentations.get(image_name)
        image = next((layer for layer in self.image_layers() if layer.name == image_name), None)
        if result is None or image is None:
            return
        if table is not None:
            self.quantify_section.update_from_table(table, list(result.class_names))
            return
        from ..contributions.layers import volume_from_layer

        self.quantify_section.update_from_labels(result.labels, volume_from_layer(image).geometry, list(result.class_names))
