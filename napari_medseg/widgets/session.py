"""Everything one viewer's panel knows, in one object (no module-level state)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Session:
    """Per-viewer state: the active model, the device, and the latest results per image.

    Attributes:
        viewer: the napari viewer.
        model: the loaded model (a bundle with ``.config``), or None.
        device: "auto", "cpu", "cuda" or "mps".
        segmentations: image layer name -> latest :class:`~napari_medseg.inference.Segmentation`.
        reports: image layer name -> extra report sections (uncertainty, OOD, Grad-CAM).
    """

    viewer: Any
    model: Any = None
    device: str = "auto"
    segmentations: dict[str, Any] = field(default_factory=dict)
    reports: dict[str, dict] = field(default_factory=dict)
    _model_listeners: list[Callable[[Any], None]] = field(default_factory=list)

    def set_model(self, model: Any) -> None:
        self.model = model
        for listener in list(self._model_listeners):
            listener(model)

    def on_model_changed(self, listener: Callable[[Any], None]) -> None:
        self._model_listeners.append(listener)

    @property
    def model_name(self) -> str:
        if self.model is None:
            return ""
        return (getattr(self.model, "bundle_meta", {}) or {}).get("name", "model")
