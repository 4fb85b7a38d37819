"""Models people already have: nnU-Net v2 trained-model folders, opened as models here.

The small interface the rest of the project calls:

- :func:`detect` — what kind of external model a path is (``"nnunet"`` or None), from its
  files alone;
- :func:`open_model` — the model (a torch module with ``.config``, ``.bundle_path``,
  ``.bundle_meta``) that also segments a whole volume its own way (:func:`segment_volume`);
- :func:`find_models` — nnU-Net folders under ``$nnUNet_results``, for ``medseg models``.

Opening one needs the optional extra ``napari-medseg[nnunet]``; without it the error names
the extra. Checkpoints are read weights-only, plans are checked against allow-lists before
nnU-Net's code sees them (see :mod:`.nnunet_plans`, :mod:`.checkpoint`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ExternalModelError

__all__ = [
    "ExternalInfo", "ExternalModelError", "detect", "find_models", "is_external", "open_model", "refuse_external",
    "segment_volume",
]  # fmt: skip

RESULTS_ENV = "nnUNet_results"
_MAX_DEPTH = 3


@dataclass(frozen=True)
class ExternalInfo:
    """What ``medseg models`` lists about an external model (read from its JSON only)."""

    name: str
    path: Path
    kind: str
    configuration: str
    classes: tuple[str, ...]
    folds: tuple[str, ...]


def detect(path: str | os.PathLike) -> str | None:
    """``"nnunet"`` for an nnU-Net trained-model folder, else None (nothing is imported)."""
    from .nnunet_plans import is_nnunet_folder

    return "nnunet" if is_nnunet_folder(path) else None


def is_external(model: Any) -> bool:
    """True for a model :func:`open_model` made."""
    return hasattr(model, "predict_volume") and hasattr(model, "fold_states")


def refuse_external(model: Any, feature: str) -> None:
    """Raise for a step that external models do not have yet (they segment, and their
    volumes, reports and exports follow; Grad-CAM, uncertainty and fine-tuning do not).

    Raises:
        ExternalModelError: ``model`` is external; the message names ``feature`` and the model.
    """
    if is_external(model):
        raise ExternalModelError(
            getattr(model, "bundle_path", "?"),
            f"{feature} is not available for nnU-Net model folders yet (segmentation, volumes and exports are)",
        )


def open_model(path: str | os.PathLike, device: Any = None, **options: Any):
    """Open an external model folder on ``device`` (None: cpu); see :func:`detect`.

    Raises:
        ExternalModelError: not an external model, or one that cannot be opened (named).
    """
    from ..bundle import resolve_device

    kind = detect(path)
    if kind != "nnunet":
        raise ExternalModelError(path, "not an nnU-Net model folder (dataset.json, plans.json, fold_*/)")
    from .nnunet_model import open_nnunet

    return open_nnunet(path, **options).to(resolve_device(device))


def segment_volume(model: Any, volume: Any, *, device: Any = "cpu", progress=None, should_stop=None, **options: Any):
    """(K, z, y, x) float32 probabilities of ``volume`` on its own grid, the model's own way."""
    return model.predict_volume(volume.array, volume.spacing, device=device, progress=progress,
                                should_stop=should_stop, **options)  # fmt: skip


def find_models(root: str | os.PathLike | None = None) -> list[ExternalInfo]:
    """nnU-Net trained-model folders under ``root`` (default ``$nnUNet_results``), up to
    three levels deep (``DatasetXXX/Trainer__Plans__config``); unreadable ones are skipped."""
    from .nnunet_plans import is_nnunet_folder, read_nnunet_folder

    root = root or os.environ.get(RESULTS_ENV)
    if not root or not Path(root).is_dir():
        return []
    found = []
    for folder in _folders(Path(root), _MAX_DEPTH):
        if not is_nnunet_folder(folder):
            continue
        try:
            info = read_nnunet_folder(folder)
        except ExternalModelError:
            continue
        found.append(ExternalInfo(f"{folder.parent.name}/{folder.name}", folder, "nnunet", info.configuration,
                                  info.class_names, info.folds))  # fmt: skip
    return found


def _folders(root: Path, depth: int) -> list[Path]:
    if depth < 0:
        return []
    out = []
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        out.append(child)
        out.extend(_folders(child, depth - 1))
    return out
