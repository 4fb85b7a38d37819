"""Uncertainty: sample the model, show total/aleatoric/epistemic layers and the OOD verdict."""

from __future__ import annotations

from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QGroupBox, QLabel, QPushButton, QSpinBox

METHODS = ["mc-dropout", "tta", "ensemble"]


class UncertaintySection(QGroupBox):
    def __init__(self, panel) -> None:
        super().__init__("Uncertainty")
        self.panel = panel
        self.method_combo = QComboBox()
        self.method_combo.addItems(METHODS)
        self.method_combo.setToolTip(
            "mc-dropout: epistemic; tta: mostly aleatoric; ensemble: the shipped and user models with the same classes "
            "(an nnU-Net folder: its folds; its tta: its mirroring; a MONAI bundle: tta flips its roi)"
        )
        self.samples_spin = QSpinBox()
        self.samples_spin.setRange(2, 64)
        self.samples_spin.setValue(10)
        self.postprocess_check = QCheckBox("Of the post-processed labels")
        self.postprocess_check.setChecked(True)
        self.postprocess_check.setToolTip(
            "Checked: every sample goes through the model's post-processing (with the refinement when the Segment "
            "section's box asks for it), so the maps describe the labels shown. Unchecked: the network's own samples."
        )
        self.run_button = QPushButton("Estimate uncertainty")
        self.ood_label = QLabel("")
        self.ood_label.setWordWrap(True)
        form = QFormLayout(self)
        form.addRow("Sampler", self.method_combo)
        form.addRow("Samples", self.samples_spin)
        form.addRow(self.postprocess_check)
        form.addRow(self.run_button)
        form.addRow(self.ood_label)
        self.run_button.clicked.connect(self._on_run_clicked)

    def _on_run_clicked(self) -> None:
        self.run()

    def run(self):
        from napari.utils.notifications import show_warning

        from ...contributions.layers import volume_from_layer
        from ...models.external import is_external

        panel = self.panel
        image, model = panel.selected_image(), panel.session.model
        if image is None or model is None:
            show_warning("Choose an image layer and a model first.")
            return None
        method = self.method_combo.currentText()
        models = [model]
        if method == "ensemble" and not is_external(model):  # an nnU-Net folder's ensemble is its folds
            models = [model, *ensemble_partners(model)]
            if len(models) < 2:
                show_warning("An ensemble needs a second model with the same classes (e.g. a fine-tuned version).")
                return None
        return panel.jobs.start(
            "Uncertainty",
            _uncertainty_job,
            on_done=lambda result: self._on_estimated(image, result),
            lock=panel.controls(),
            volume=volume_from_layer(image),
            models=models,
            method=method,
            samples=self.samples_spin.value(),
            device=panel.session.device,
            postprocessing=self.postprocess_check.isChecked(),
            refine=panel.session.refine,
        )

    def _on_estimated(self, image, result) -> None:
        from napari.utils.notifications import show_warning

        from ..layers import show_map

        viewer = self.panel.viewer
        tag = f"[{result.method}, {result.samples} samples{', post-processed' if result.postprocessed else ''}]"
        show_map(viewer, image, result.total, f"{image.name} total uncertainty {tag}", kind="uncertainty")
        show_map(viewer, image, result.aleatoric, f"{image.name} aleatoric {tag}", kind="uncertainty").visible = False
        show_map(viewer, image, result.epistemic, f"{image.name} epistemic {tag}", kind="uncertainty").visible = False
        self.panel.session.reports.setdefault(image.name, {})["uncertainty"] = result.report()
        self.panel.session.reports[image.name]["ood"] = result.ood.as_dict()
        text = ood_text(result.ood)
        self.ood_label.setText(text)
        if result.ood.flag:
            show_warning(f"{image.name}: {text}")


def ood_text(ood) -> str:
    """One line for the panel: score, threshold, verdict with each test that flags by name
    and value (:meth:`~napari_medseg.uncertainty.OODResult.describe`), foreground volume."""
    calibrating = f"; OOD threshold calibrating: {ood.calibrating}" if getattr(ood, "calibrating", None) else ""
    if ood.flag is None:
        verdict = "no calibrated threshold in this bundle" if not calibrating else "no test could run"
    elif ood.flag:
        verdict = f"OUT OF DISTRIBUTION: do not trust this result (flagged by {ood.describe()})"
    else:
        verdict = "within the training distribution"
    return (f"OOD score {ood.score:.3f}" + (f" (threshold {ood.threshold:.3f})" if ood.threshold is not None else "")
            + f": {verdict}{calibrating}; predicted tissue {ood.foreground_ml:.0f} mL")  # fmt: skip


def ensemble_partners(model, limit: int = 3) -> list:
    """Other bundles with the same classes (shipped first, then user versions)."""
    from ...models import list_bundles, load_model

    own = getattr(model, "bundle_path", None)
    partners = []
    for info in list_bundles():
        if info.classes == tuple(model.config.class_names) and info.path != own and len(partners) < limit:
            partners.append(load_model(info.path, device="cpu"))
    return partners


def _uncertainty_job(volume, models, method, samples, device, postprocessing=True, refine=False, progress=None,
                     should_stop=None):  # fmt: skip
    """Runs on a worker thread; must not touch Qt."""
    from ...uncertainty import estimate_uncertainty

    target = models if method == "ensemble" else models[0]
    return estimate_uncertainty(volume, target, method=method, samples=samples, device=device,
                                postprocessing=postprocessing, refine=refine, progress=progress,
                                should_stop=should_stop)  # fmt: skip
