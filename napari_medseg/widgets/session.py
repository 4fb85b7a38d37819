"""Everything one viewer's panel knows, in one object (no module-level state)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


#: What sections tell each other through the session, instead of calling one another:
#: ``model_changed(model)``; ``version_saved(path)``, a new model version to make active;
#: ``segment_requested()``, re-segment the selected image with the active model;
#: ``save_corrections()``, write every changed corrections layer now.
EVENTS = ("model_changed", "version_saved", "segment_requested", "save_corrections")


@dataclass
class Session:
    """Per-viewer state: the active model, the device, and the latest results per image.

    Attributes:
        viewer: the napari viewer.
        model: the loaded model (a bundle with ``.config``), or None.
        device: "auto", "cpu", "cuda" or "mps".
        refine: segmentations and their uncertainty maps also run the bundle's refinement
            kept on request (the Segment section's box; see ``segment``'s ``refine``).
        segmentations: image layer name -> latest :class:`~napari_medseg.inference.Segmentation`.
        reports: image layer name -> extra report sections (uncertainty, OOD, Grad-CAM).
    """

    viewer: Any
    model: Any = None
    device: str = "auto"
    refine: bool = False
    segmentations: dict[str, Any] = field(default_factory=dict)
    reports: dict[str, dict] = field(default_factory=dict)
    _listeners: dict[str, list[Callable[..., None]]] = field(default_factory=dict)

    def connect(self, event: str, listener: Callable[..., None]) -> None:
        """Call ``listener(*args)`` whenever ``event`` is emitted (one of :data:`EVENTS`)."""
        if event not in EVENTS:
            raise ValueError(f"unknown session event {event!r}; known: {EVENTS}")
        self._listeners.setdefault(event, []).append(listener)

    def emit(self, event: str, *args: Any) -> None:
        """Tell every listener of ``event`` (in the order they connected)."""
        if event not in EVENTS:
            raise ValueError(f"unknown session event {event!r}; known: {EVENTS}")
        for listener in list(self._listeners.get(event, ())):
            listener(*args)

    def set_model(self, model: Any) -> None:
        self.model = model
        self.emit("model_changed", model)

    def on_model_changed(self, listener: Callable[[Any], None]) -> None:
        self.connect("model_changed", listener)

    @property
    def model_name(self) -> str:
        if self.model is None:
            return ""
        return (getattr(self.model, "bundle_meta", {}) or {}).get("name", "model")
