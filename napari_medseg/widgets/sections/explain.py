"""Explain: Grad-CAM / Grad-CAM++ of a class over a region, as a heat map over the scan."""

from __future__ import annotations

import numpy as np
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
            try:
                region = region_mask(panel.viewer.layers[self.region_combo.currentText()], image)
            except ValueError as err:
                show_warning(str(err))
                return None
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


def region_mask(layer, image) -> np.ndarray:
    """Boolean (z, y, x) mask in the source voxel order of ``image``'s volume.

    ``layer`` is a Labels layer (its non-zero voxels) or a Shapes layer (its filled shapes).
    Shapes are drawn in world coordinates: their vertices are mapped into ``image``'s data
    grid (the displayed axes of a permuted scan, a sagittal series or FreeSurfer's LIA,
    :mod:`~napari_medseg.contributions.layer_geometry`) and filled there. A Labels layer
    this plugin made carries its own axis order; one a user made over the image has the
    image's.

    Raises:
        ValueError: the region does not lie on the image's grid (names both shapes).
    """
    from napari.layers import Shapes

    from ...contributions.layers import METADATA_KEY, from_layer_layout

    shown = tuple(np.shape(image.data))
    if isinstance(layer, Shapes):
        # Rounded to 1/1000 voxel: Shapes keep float32 vertices, and a slice drawn at 3 that
        # comes back at 2.9999993 would be filled on slice 2.
        on_image = [np.round([image.world_to_data(layer.data_to_world(v)) for v in vertices], 3) for vertices in layer.data]
        mask = Shapes(on_image, shape_type=list(layer.shape_type), ndim=len(shown)).to_labels(labels_shape=shown) > 0
        metadata = image.metadata
    else:
        mask = np.asarray(layer.data) > 0
        metadata = layer.metadata if METADATA_KEY in (layer.metadata or {}) else image.metadata
    if mask.shape != shown:
        raise ValueError(f"region layer {layer.name!r} of shape {mask.shape} does not match the image {shown}")
    return np.ascontiguousarray(from_layer_layout(mask, metadata))


def _explain_job(volume, model, target, region, method, layer, progress=None, should_stop=None):
    """Runs on a worker thread; must not touch Qt."""
    from ...explain.scan import explain_scan

    return explain_scan(volume, model, target_class=target, region=region, method=method, layer=layer,
                        progress=progress, should_stop=should_stop)  # fmt: skip
