"""Segment: run the active model on the selected image in the background."""

from __future__ import annotations

from qtpy.QtWidgets import QCheckBox, QGroupBox, QPushButton, QVBoxLayout


class SegmentSection(QGroupBox):
    def __init__(self, panel) -> None:
        super().__init__("Segment")
        self.panel = panel
        panel.session.connect("segment_requested", self.run)
        self.run_button = QPushButton("Segment")
        self.postprocess_check = QCheckBox("Post-processing (the bundle's own)")
        self.postprocess_check.setToolTip(
            "Refinements the bundle asks for in extra['postprocess'] (largest component, atlas check, intensity "
            "mixture). A bundle's brain locator is part of the model and runs either way."
        )
        self.postprocess_check.setChecked(True)
        self.refine_check = QCheckBox("Refine with the scan's intensities")
        self.refine_check.setToolTip(
            "The bundle's per-scan refinement, kept on request: a Gaussian per tissue fitted to this scan, the "
            "network's probabilities as the prior, sharpens tissue boundaries where the network found tissue (the "
            "model card has its figures). The uncertainty maps then describe the refined labels and flag their "
            "errors less well. Off: the network decides the labels."
        )
        self.refine_check.toggled.connect(self._on_refine_toggled)
        panel.session.on_model_changed(self._on_model_changed)
        self._on_model_changed(panel.session.model)
        self.probability_check = QCheckBox("Add probability layers")
        layout = QVBoxLayout(self)
        layout.addWidget(self.postprocess_check)
        layout.addWidget(self.refine_check)
        layout.addWidget(self.probability_check)
        layout.addWidget(self.run_button)
        self.run_button.clicked.connect(self._on_run_clicked)

    def _on_run_clicked(self) -> None:
        self.run()

    def _on_refine_toggled(self, checked: bool) -> None:
        self.panel.session.refine = bool(checked)

    def _on_model_changed(self, model) -> None:
        from ...postprocess import PostprocessSettings

        offered = model is not None and hasattr(model, "config") and PostprocessSettings.refinement_offered(model.config)
        self.refine_check.setEnabled(offered)
        if not offered:
            self.refine_check.setChecked(False)

    def run(self):
        """Start segmenting the selected image; returns the worker (None if not possible)."""
        from napari.utils.notifications import show_warning

        panel = self.panel
        image = panel.selected_image()
        model = panel.session.model
        if image is None or model is None:
            show_warning("Choose an image layer and a model first.")
            return None
        from ...contributions.layers import volume_from_layer

        volume = volume_from_layer(image)
        from ...models.applicability import model_warnings

        for note in model_warnings(volume, model.config):
            show_warning(f"{image.name}: {note}")
        return panel.jobs.start(
            "Segment",
            _segment_job,
            on_done=lambda result: self._on_segmented(image, result),
            lock=panel.controls(),
            volume=volume,
            model=model,
            device=panel.session.device,
            postprocessing=self.postprocess_check.isChecked(),
            refine=panel.session.refine,
        )

    def _on_segmented(self, image, outcome) -> None:
        from napari.utils.notifications import show_warning

        from ..layers import show_map, show_segmentation
        from .uncertainty import ood_text

        result, table, ood = outcome
        panel = self.panel
        config = panel.session.model.config
        panel.session.segmentations[image.name] = result
        panel.session.reports.setdefault(image.name, {})["ood"] = ood.as_dict()
        if ood.flag:
            show_warning(f"{image.name}: {ood_text(ood)}")
        show_segmentation(panel.viewer, image, result.labels, config)
        if self.probability_check.isChecked():
            for index, name in enumerate(config.class_names[1:], start=1):
                show_map(panel.viewer, image, result.probabilities[..., index], f"{image.name} P({name})", kind="probability")
        panel.on_segmentation(image.name, table)


def _segment_job(volume, model, device, postprocessing, refine=False, progress=None, should_stop=None):
    """Runs on a worker thread; must not touch Qt. The volume table and the OOD decision
    (on the network's own prediction) are computed here too, so the GUI thread only draws.
    Returns (segmentation, volume table, OOD result)."""
    from ...inference import segment
    from ...uncertainty.ood_first_use import ood_inspector
    from ..warmup import warm_imports
    from .quantify import quantify_table

    warm_imports(("pandas",))  # napari's first Labels layer needs it: import here, not on the GUI thread
    found = {}
    result = segment(volume, model, device=device, postprocessing=postprocessing, refine=refine, progress=progress,
                     should_stop=should_stop, inspect=ood_inspector(model, volume, lambda ood: found.update(ood=ood)))  # fmt: skip
    return result, quantify_table(result.labels, volume.geometry, list(result.class_names)), found["ood"]
