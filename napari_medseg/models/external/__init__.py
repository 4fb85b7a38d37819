"""Models people already have: nnU-Net v2 trained-model folders and MONAI bundles, opened as
models here.

The small interface the rest of the project calls:

- :func:`detect` — what kind of external model a path is (``"nnunet"``, ``"monai"`` or
  None), from its files alone;
- :func:`open_model` — the model (a torch module with ``.config``, ``.bundle_path``,
  ``.bundle_meta``) that also segments a whole volume its own way (:func:`segment_volume`);
- uncertainty samples drawn the model's own way (``sample_count``, ``sample_probabilities``;
  :mod:`.sampling`): nnU-Net's folds and mirroring, a MONAI bundle's roi flips, dropout;
- Grad-CAM computed where the model runs (``grad_cam_volume``; :mod:`.cam`): its own
  preprocessing, windows and way back to the scan's grid;
- fine-tuning (``training_copy``, ``training_arrays``, ``keep_trained_weights``;
  :mod:`.training`) on the network's own grid, and the new version written back in the
  model's own format (:mod:`.finetuned`): an nnU-Net folder ``nnUNetv2_predict`` runs, a
  MONAI bundle;
- :func:`find_models` — nnU-Net folders under ``$nnUNet_results`` and MONAI bundles under
  ``$NAPARI_MEDSEG_MONAI_BUNDLES``, for ``medseg models``;
- the OOD threshold calibrated on first use, kept in the user's data folder, never in the
  model's (:mod:`.ood_store`): :func:`open_model` puts it into ``config.extra["ood"]``.

Opening one needs the optional extra ``napari-medseg[nnunet]`` or ``napari-medseg[monai]``;
without it the error names the extra. Checkpoints are read weights-only; nnU-Net plans are
checked against allow-lists before nnU-Net's code sees them (:mod:`.nnunet_plans`), MONAI
configs are read as data and never evaluated (:mod:`.monai_config`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ExternalModelError

__all__ = [
    "ExternalInfo", "ExternalModelError", "detect", "find_models", "is_external", "model_files", "open_model",
    "segment_volume",
]  # fmt: skip

RESULTS_ENV = "nnUNet_results"
MONAI_BUNDLES_ENV = "NAPARI_MEDSEG_MONAI_BUNDLES"
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
    """``"nnunet"`` for an nnU-Net trained-model folder, ``"monai"`` for a MONAI bundle folder
    or .zip, else None (names are read, nothing is imported)."""
    from .monai_files import is_monai_bundle
    from .nnunet_plans import is_nnunet_folder

    if is_nnunet_folder(path):
        return "nnunet"
    return "monai" if is_monai_bundle(path) else None


def model_files(path: str | os.PathLike) -> list[Path]:
    """The files that decide what an external model folder computes, sorted: an nnU-Net
    folder's ``dataset.json``, ``plans.json`` and each fold's ``checkpoint_final.pth``; a
    MONAI bundle folder's ``configs/`` and ``models/model.pt``. Empty for anything else
    (a .zip is one file already)."""
    path = Path(path)
    kind = detect(path) if path.is_dir() else None
    if kind == "nnunet":
        files = [path / "dataset.json", path / "plans.json", *path.glob("fold_*/checkpoint_final.pth")]
    elif kind == "monai":
        files = [p for p in (path / "configs").rglob("*") if p.is_file()] + [path / "models" / "model.pt"]
    else:
        return []
    return sorted(p for p in files if p.is_file())


def is_external(model: Any) -> bool:
    """True for a model :func:`open_model` made."""
    return hasattr(model, "predict_volume") and getattr(model, "segments_volumes", False)


def open_model(path: str | os.PathLike, device: Any = None, **options: Any):
    """Open an external model folder (or MONAI bundle .zip) on ``device`` (None: cpu); see
    :func:`detect`. ``options`` go to the opener (nnU-Net: ``folds``, ``checkpoint_name``).
    The model's OOD store is attached (``model.ood_store``) and its calibrated threshold,
    once there is one, is in ``config.extra["ood"]`` (:func:`.ood_store.attach_store`).

    Raises:
        ExternalModelError: not an external model, or one that cannot be opened (named).
    """
    from ..bundle import resolve_device
    from .ood_store import attach_store

    kind = detect(path)
    if kind == "nnunet":
        from .nnunet_model import open_nnunet

        return attach_store(open_nnunet(path, **options).to(resolve_device(device)), path)
    if kind == "monai":
        from .monai_model import open_monai

        return attach_store(open_monai(path, **options).to(resolve_device(device)), path)
    raise ExternalModelError(path, "neither an nnU-Net model folder (dataset.json, plans.json, fold_*/) nor a MONAI "
                             "bundle (configs/metadata.json, configs/inference.json, models/model.pt)")  # fmt: skip


def segment_volume(model: Any, volume: Any, *, device: Any = "cpu", progress=None, should_stop=None, **options: Any):
    """(K, z, y, x) float32 probabilities of ``volume`` on its own grid, the model's own way."""
    return model.predict_volume(volume.array, volume.spacing, geometry=volume.geometry, device=device,
                                progress=progress, should_stop=should_stop, **options)  # fmt: skip


def find_models(root: str | os.PathLike | None = None, monai_root: str | os.PathLike | None = None) -> list[ExternalInfo]:
    """nnU-Net trained-model folders under ``root`` (default ``$nnUNet_results``), up to
    three levels deep (``DatasetXXX/Trainer__Plans__config``), then MONAI bundles directly
    under ``monai_root`` (default ``$NAPARI_MEDSEG_MONAI_BUNDLES``), then the fine-tuned
    versions of such models in the user models folder; unreadable ones are skipped."""
    from ..catalog import user_models_dir

    found = _nnunet_models(root or os.environ.get(RESULTS_ENV)) + _monai_models(monai_root or os.environ.get(MONAI_BUNDLES_ENV))
    seen = {info.path.resolve() for info in found}
    versions = _nnunet_models(user_models_dir()) + _monai_models(user_models_dir())
    return found + [info for info in versions if info.path.resolve() not in seen]


def _nnunet_models(root: str | os.PathLike | None) -> list[ExternalInfo]:
    from .nnunet_plans import is_nnunet_folder, read_nnunet_folder

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


def _monai_models(root: str | os.PathLike | None) -> list[ExternalInfo]:
    """MONAI bundle folders directly under ``root``, described from their configs (read as
    data; .zip files are not listed: reading them would mean unpacking them)."""
    from .monai_config import read_inference_config
    from .monai_files import INFERENCE_CONFIGS, METADATA, find_monai_bundles, read_config_file
    from .monai_meta import class_names_of

    found = []
    for path in find_monai_bundles(root) if root else []:
        try:
            _, metadata = read_config_file(path, (METADATA,), path)
            file, config = read_config_file(path, INFERENCE_CONFIGS, path)
            inference = read_inference_config(config, file, path)
        except ExternalModelError:
            continue
        classes = class_names_of(metadata, int(inference.network_kwargs.get("out_channels", 0) or 0))
        found.append(ExternalInfo(path.name, path, "monai", inference.network, classes, ()))
    return found
