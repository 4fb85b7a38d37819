"""Fine-tune: learn from the corrections in the background; every run is a new version."""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QLabel, QPushButton, QSpinBox

from ...training.options import DEFAULT_STEPS
from ..layers import corrections_layer

# what fine-tuning keeps away from the strokes: (label shown, ``distill_target``)
KEEP_CHOICES = (("the segmentation I corrected", "segmentation"), ("the network's output", "network"))


class FinetuneSection(QGroupBox):
    def __init__(self, panel) -> None:
        super().__init__("Fine-tune")
        self.panel = panel
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 5000)
        self.steps_spin.setValue(DEFAULT_STEPS)
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(5)
        self.lr_spin.setRange(1e-5, 1e-1)
        self.lr_spin.setSingleStep(1e-4)
        self.lr_spin.setValue(1e-3)
        self.keep_combo = QComboBox()
        for text, target in KEEP_CHOICES:
            self.keep_combo.addItem(text, target)
        self.keep_combo.setToolTip(
            "Away from your strokes the new version learns to keep the active model's segmentation "
            "(post-processing included; the default, so that corrections reach the labels you see) "
            "or its network's raw output."
        )
        self.run_button = QPushButton("Fine-tune on corrections")
        self.resegment_button = QPushButton("Re-segment with the active model")
        self.loss_label = QLabel("")
        form = QFormLayout(self)
        form.addRow("Steps", self.steps_spin)
        form.addRow("Learning rate", self.lr_spin)
        form.addRow("Keep elsewhere", self.keep_combo)
        form.addRow(self.run_button)
        form.addRow(self.loss_label)
        form.addRow(self.resegment_button)
        self.run_button.clicked.connect(self._on_run_clicked)
        self.resegment_button.clicked.connect(self._on_resegment_clicked)

    def _on_run_clicked(self) -> None:
        self.run()

    def run(self):
        from napari.utils.notifications import show_warning

        from ...contributions.layers import from_layer_layout, volume_from_layer

        panel = self.panel
        image, model = panel.selected_image(), panel.session.model
        layer = corrections_layer(panel.viewer, image) if image is not None else None
        if image is None or model is None or layer is None or not np.any(layer.data):
            show_warning("Paint some corrections first (Correct > Create corrections layer).")
            return None
        panel.session.emit("save_corrections")
        distill_target = self.keep_combo.currentData()
        return panel.jobs.start(
            "Fine-tune",
            _finetune_job,
            on_done=self._on_finetuned,
            lock=panel.controls(),
            wants_message=True,
            parent=model,
            volume=volume_from_layer(image),
            labels=np.array(from_layer_layout(np.asarray(layer.data), layer.metadata)),
            options=self.options(device=panel.session.device),
            reference=self._corrected_segmentation(image, model) if distill_target == "segmentation" else None,
        )

    def options(self, device: str = "auto"):
        """The :class:`~napari_medseg.training.options.FinetuneOptions` the controls set."""
        from ...training.options import FinetuneOptions

        return FinetuneOptions(
            steps=self.steps_spin.value(), lr=self.lr_spin.value(), distill_target=self.keep_combo.currentData(),
            device=device,
        )  # fmt: skip

    def _corrected_segmentation(self, image, model) -> np.ndarray | None:
        """The segmentation on screen that the strokes correct (source voxel order), when
        the active model made it; fine-tuning keeps it away from the strokes."""
        result = self.panel.session.segmentations.get(image.name)
        if result is None or tuple(result.class_names) != tuple(model.config.class_names):
            return None
        return result.labels

    def _on_finetuned(self, outcome) -> None:
        from napari.utils.notifications import show_info

        path, result = outcome
        if path is None:
            return
        after = result.metrics_after.get("accuracy") if isinstance(result.metrics_after, dict) else None
        before = result.metrics_before.get("accuracy") if isinstance(result.metrics_before, dict) else None
        if before is not None and after is not None:
            self.loss_label.setText(f"{result.steps_done} steps; accuracy on the strokes {before:.3f} → {after:.3f}")
        note = result.settings.get("postprocess_note") if isinstance(result.settings, dict) else None
        show_info(f"New model version saved: {path.name}" + (f"; {note}" if note else ""))
        self.panel.session.emit("version_saved", path)  # the new version becomes active

    def _on_resegment_clicked(self) -> None:
        self.panel.session.emit("segment_requested")


def _finetune_job(parent, volume, labels, options, reference=None, progress=None, should_stop=None, message=None):
    """Runs on a worker thread; must not touch Qt. Returns (new bundle path, result).
    ``reference``: the (z, y, x) segmentation kept away from the strokes, or None to
    segment with ``parent`` first."""
    from ...training.finetune import run_finetune
    from ...training.versions import save_result

    def on_step(record) -> None:
        if progress is not None:
            progress(record.step, record.total)
        if message is not None:
            message(f"step {record.step}/{record.total}, loss {record.loss:.4f}")

    if message is not None and options.kept_toward_segmentation and reference is None:
        message("segmenting with the active model (what fine-tuning keeps away from the strokes)")
    references = None if reference is None else [reference]
    result = run_finetune(parent, [volume], [labels], options, references=references, progress=on_step,
                          should_stop=should_stop)  # fmt: skip
    return save_result(result, parent), result
