"""Export: every result layer of the image with the source geometry, plus the report JSON."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLineEdit, QPushButton, QWidget

FORMATS = [".nii.gz", ".nrrd", ".mha"]


class ExportSection(QGroupBox):
    def __init__(self, panel) -> None:
        super().__init__("Export")
        self.panel = panel
        self.folder_edit = QLineEdit(str(Path.cwd() / "medseg-export"))
        self.browse_button = QPushButton("…")
        self.format_combo = QComboBox()
        self.format_combo.addItems(FORMATS)
        self.export_button = QPushButton("Export results")
        row = QHBoxLayout()
        row.addWidget(self.folder_edit, 1)
        row.addWidget(self.browse_button)
        holder = QWidget()
        holder.setLayout(row)
        form = QFormLayout(self)
        form.addRow("Folder", holder)
        form.addRow("Format", self.format_combo)
        form.addRow(self.export_button)
        self.browse_button.clicked.connect(self._on_browse_clicked)
        self.export_button.clicked.connect(self._on_export_clicked)

    def _on_browse_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export folder", self.folder_edit.text())
        if folder:
            self.folder_edit.setText(folder)

    def _on_export_clicked(self) -> None:
        self.export()

    def export(self) -> list[Path]:
        """Write the selected image's result layers; returns the written paths."""
        from napari.utils.notifications import show_error, show_info

        panel = self.panel
        image = panel.selected_image()
        if image is None:
            show_error("Choose an image layer to export its results.")
            return []
        try:
            written = export_results(panel, image, Path(self.folder_edit.text()), self.format_combo.currentText())
        except (OSError, ValueError) as exc:
            show_error(f"Export failed: {exc}")
            return []
        show_info(f"Exported {len(written)} files to {self.folder_edit.text()}")
        return written


def export_results(panel, image, folder: Path, suffix: str) -> list[Path]:
    """Labels as uint8/uint16 (a segmentation with the bundle's label values), maps as
    float32, all on the image's exact grid; report JSON."""
    from napari.layers import Image, Labels

    from ..._layers import volume_from_layer
    from ...io import write_volume
    from ...report import build_report, write_json

    folder.mkdir(parents=True, exist_ok=True)
    source = volume_from_layer(image)
    written = []
    for layer in panel.viewer.layers:
        if layer is image or layer.metadata.get("medseg", {}).get("image_layer") != image.name:
            continue
        if not isinstance(layer, (Labels, Image)) or layer.data.shape[-3:] != source.shape:
            continue
        kind = "labels" if isinstance(layer, Labels) else "image"
        name = "".join(ch if ch.isalnum() or ch in "-_()" else "_" for ch in layer.name)
        data = layer.data
        model = panel.session.model
        if kind == "labels" and model is not None and _is_segmentation_of(layer, model.config):
            data = model.config.encode_labels(data)  # the bundle's label values, as `medseg segment` writes
        written.append(write_volume(folder / f"{name}{suffix}", data, source, kind=kind))
    result = panel.session.segmentations.get(image.name)
    if result is not None and panel.session.model is not None:
        report = build_report(source, result, panel.session.model, panel.session.reports.get(image.name))
        report["outputs"] = [path.name for path in written]
        written.append(write_json(folder / f"{image.name}_report.json", report))
    return written


def _is_segmentation_of(layer, config) -> bool:
    """A segmentation layer (class indices) of ``config``'s classes, not a corrections layer."""
    medseg = layer.metadata.get("medseg", {})
    return not medseg.get("corrections") and list(medseg.get("class_names", [])) == list(config.class_names)
