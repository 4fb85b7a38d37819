"""Explain: Grad-CAM / Grad-CAM++ of a class over a region, as a heat map over the scan."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QFormLayout, QGroupBox, QLineEdit, QPushButton

PREDICTED = "predicted mask"


class ExplainSection(QGroupBox):
    def __init__(self, panel) -> None:
        super().__init__("Explain")
        self.panel = panel
        self.class_combo = QComboBox()
        self.region_combo = QComboBox()
        self.region_combo.setToolTip("Sum the class logits over this region (a Labels or Shapes layer: its non-zero voxels)")
        self.method_combo = QComboBox()
        self.method_combo.addItems(["gradcam", "gradcam++"])
        self.layer_edit = QLineEdit()
        self.layer_edit.setPlaceholderText("bundle default")
        self.run_button = QPushButton("Explain")
        form = QFormLayout(self)
        form.addRow("Class", self.class_combo)
        form.addRow("Region", self.region_combo)
        form.addRow("Method", self.method_combo)
        form.addRow("Layer", self.layer_edit)
        form.addRow(self.run_button)
        self.run_button.clicked.connect(self._on_run_clicked)
        panel.session.on_model_changed(self._on_model_changed)
        self._on_model_changed(panel.session.model)

    def _on_model_changed(self, model) -> None:
        self.class_combo.clear()
        if model is not None:
            self.class_combo.addItems(list(model.config.class_names[1:]))
            self.layer_edit.setPlaceholderText(model.config.gradcam_layer or "architecture default")

    def refresh_regions(self) -> None:
        from napari.layers import Labels, Shapes

        current = self.region_combo.currentText()
        names = [PREDICTED] + [
            layer.name for layer in self.panel.viewer.layers if isinstance(layer, (Labels, Shapes)) and not layer.name.endswith("segmentation")
        ]
        self.region_combo.clear()
        self.region_combo.addItems(names)
        if current in names:
            self.region_combo.setCurrentText(current)

    def _on_run_clicked(self) -> None:
        self.run()

    def run(self):
        from napari.utils.notifications import show_warning

        from ...contributions.layers import volume_from_layer

        panel = self.panel
        image, model = panel.selected_image(), panel.session.model
        if image is None or model is None or not self.class_combo.currentText():
            show_warning("Choose an image layer, a model and a class first.")
            return None
        volume = volume_from_layer(image)
        region = None
        if self.region_combo.currentText() not in ("", PREDICTED):
            region = region_mask(panel.viewer.layers[self.region_combo.currentText()], volume.shape)
        target = self.class_combo.currentText()
        return panel.jobs.start(
            "Grad-CAM",
            _explain_job,
            on_done=lambda cam: self._on_explained(image, target, cam),
            lock=panel.controls(),
            volume=volume,
            model=model,
            target=target,
            region=region,
            method=self.method_combo.currentText(),
            layer=self.layer_edit.text().strip() or None,
        )

    def _on_explained(self, image, target: str, cam) -> None:
        from ..layers import show_map

        method = "Grad-CAM++" if self.method_combo.currentText() == "gradcam++" else "Grad-CAM"
        show_map(self.panel.viewer, image, cam, f"{image.name} {method} {target}", kind="gradcam")
        self.panel.session.reports.setdefault(image.name, {}).setdefault("gradcam", {"classes": []})["classes"].append(
            {"class": target, "method": method}
        )


def region_mask(layer, shape):
    """Boolean (z, y, x) mask from a Labels layer (non-zero) or a Shapes layer (filled shapes)."""
    import numpy as np
    from napari.layers import Shapes

    if isinstance(layer, Shapes):
        mask = layer.to_labels(labels_shape=shape) > 0
    else:
        from ...contributions.layers import from_layer_layout

        mask = from_layer_layout(np.asarray(layer.data), layer.metadata) > 0
    if mask.shape != tuple(shape):
        raise ValueError(f"region layer {layer.name!r} of shape {mask.shape} does not match the image {tuple(shape)}")
    return mask


def _explain_job(volume, model, target, region, method, layer, progress=None, should_stop=None):
    """Runs on a worker thread; must not touch Qt."""
    from ...explain.scan import explain_scan

    return explain_scan(volume, model, target_class=target, region=region, method=method, layer=layer,
                        progress=progress, should_stop=should_stop)  # fmt: skip
