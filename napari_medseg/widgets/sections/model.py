"""Model: choose a shipped bundle, a user version, or a bundle folder; device; card summary."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QPushButton, QWidget

DEVICES = ["auto", "cpu", "cuda", "mps"]


class ModelSection(QGroupBox):
    def __init__(self, session) -> None:
        super().__init__("Model")
        self.session = session
        session.connect("version_saved", self.select_path)
        self.model_combo = QComboBox()
        self.model_combo.setToolTip("Shipped models and your fine-tuned versions")
        self.open_button = QPushButton("Open folder…")
        self.refresh_button = QPushButton("↻")
        self.refresh_button.setToolTip("Refresh the list of models")
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)

        row = QHBoxLayout()
        row.addWidget(self.model_combo, 1)
        row.addWidget(self.refresh_button)
        row.addWidget(self.open_button)
        holder = QWidget()
        holder.setLayout(row)
        form = QFormLayout(self)
        form.addRow("Bundle", holder)
        form.addRow("Device", self.device_combo)
        form.addRow(self.summary)

        self._paths: list[Path] = []
        self.model_combo.currentIndexChanged.connect(self._on_model_chosen)
        self.open_button.clicked.connect(self._on_open_clicked)
        self.refresh_button.clicked.connect(self.refresh)
        self.device_combo.currentTextChanged.connect(self._on_device_changed)
        self.refresh()

    def refresh(self, select: Path | None = None) -> None:
        """Re-read the catalogue; keep (or move to) the selected bundle."""
        from ...models import list_bundles

        current = select or (self._paths[self.model_combo.currentIndex()] if self._paths and self.model_combo.currentIndex() >= 0 else None)
        infos = list_bundles()
        self._paths = [info.path for info in infos]
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for info in infos:
            kind = "shipped" if info.shipped else f"v{info.version}"
            self.model_combo.addItem(f"{info.name} ({info.architecture}, {kind})")
        if current is not None and current not in self._paths:
            self._paths.append(current)
            self.model_combo.addItem(f"{current.name} (folder)")
        self.model_combo.blockSignals(False)
        index = self._paths.index(current) if current in self._paths else self._default_index(infos)
        if index >= 0:
            self.model_combo.setCurrentIndex(index)
            self._on_model_chosen(index)
        else:
            self.summary.setText("No model bundle found.")

    @staticmethod
    def _default_index(infos) -> int:
        """The shipped default bundle's row, else the first row (-1 when there is none)."""
        from ...models import DEFAULT_MODEL

        rows = [k for k, info in enumerate(infos) if info.shipped and info.name == DEFAULT_MODEL]
        return rows[0] if rows else (0 if infos else -1)

    def select_path(self, path: Path) -> None:
        self.refresh(select=Path(path))

    # callbacks ------------------------------------------------------------------------
    def _on_model_chosen(self, index: int) -> None:
        if index < 0 or index >= len(self._paths):
            return
        self.load(self._paths[index])

    def load(self, path: Path) -> None:
        """Load a bundle (fast: a few MB of weights) and make it the session's model."""
        from napari.utils.notifications import show_error

        from ...models import load_model

        try:
            model = load_model(path, device="cpu")
        except Exception as exc:  # noqa: BLE001 - any bad bundle becomes a notification
            show_error(f"Cannot load model {path}: {exc}")
            self.summary.setText(f"Not loaded: {exc}")
            return
        self.session.set_model(model)
        self.summary.setText(card_summary(model))

    def _on_open_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a model bundle folder")
        if folder:
            self.select_path(Path(folder))

    def _on_device_changed(self, device: str) -> None:
        self.session.device = device


def card_summary(model) -> str:
    """Classes, modality, version and measured Dice from a bundle's config and meta."""
    config = model.config
    meta = getattr(model, "bundle_meta", {}) or {}
    lines = [
        f"{config.architecture}, {config.spatial_dims}D, {config.modality}; classes: {', '.join(config.class_names[1:])}",
        f"version {meta.get('version', '?')}" + (f", parent {str(meta.get('parent_id'))[:8]}" if meta.get("parent_id") else ""),
    ]
    metrics = meta.get("metrics", {}) or {}
    dice = metrics.get("dev_subject_dice") or metrics.get("dice")
    if isinstance(dice, dict):
        lines.append("measured Dice: " + ", ".join(f"{k} {v:.2f}" for k, v in dice.items() if isinstance(v, (int, float))))
    return "\n".join(lines)
