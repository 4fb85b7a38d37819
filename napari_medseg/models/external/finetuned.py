"""A fine-tuned external model written back in its own format, as a new folder.

- nnU-Net: a new trainer folder ``<Trainer>_ft<stamp>__<Plans>__<configuration>`` holding the
  parent's ``dataset.json`` and ``plans.json`` (byte for byte) and the fine-tuned fold's
  ``fold_<k>/checkpoint_final.pth`` in nnU-Net's checkpoint layout (the parent's checkpoint
  with the new ``network_weights``; no optimizer state), so ``nnUNetv2_predict`` (``-tr
  <Trainer>_ft<stamp>`` under a results folder, or ``nnUNetv2_predict_from_modelfolder``)
  runs it. By default it lies in the user models folder under the parent's dataset folder
  name, ``<user models>/DatasetXXX_Name/<new trainer folder>``.
- MONAI: a copy of the bundle's files (regular files only) with ``models/model.pt``
  replaced by the new state dict, a stale ``models/model.ts`` left out and
  ``configs/metadata.json``'s version and change log extended.

Both get this project's record beside them (:data:`PROVENANCE_FILE`: parent, training
settings and metrics). Folders are written into a temporary sibling and renamed into place;
an existing folder is never replaced, the parent never written.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ...io.atomic import new_folder_atomic
from .checkpoint import load_checkpoint
from .errors import ExternalModelError

__all__ = ["PROVENANCE_FILE", "nnunet_version_path", "write_version"]

PROVENANCE_FILE = "medseg_finetune.json"
_METADATA = Path("configs") / "metadata.json"
_STALE = {Path("models") / "model.pt", Path("models") / "model.ts"}


def nnunet_version_path(parent, folder: Path, stamp: str) -> Path:
    """Where a new version of nnU-Net model ``parent`` goes under ``folder`` (the user models
    folder) for ``stamp`` (``YYYYmmdd-HHMMSS``, maybe ``-2``...): a trainer folder under the
    parent's dataset folder name, so ``nnUNet_results=<folder>`` finds it."""
    info = parent.folder
    dataset = info.path.parent.name if info.path.parent.name.startswith("Dataset") else "nnUNet_finetuned"
    return folder / dataset / f"{info.trainer}_ft{stamp.replace('-', '_')}__{info.plans_name}__{info.configuration}"


def write_version(model, parent, target: Path, record: Mapping[str, Any]) -> Path:
    """Write fine-tuned ``model`` (a training copy of external ``parent``) as folder ``target``.

    Args:
        record: this project's provenance (JSON data), written as :data:`PROVENANCE_FILE`.

    Raises:
        FileExistsError: ``target`` exists.
        ExternalModelError: an nnU-Net target not named ``Trainer__Plans__configuration``.
    """
    target = Path(target)
    if target.exists():
        raise FileExistsError(f"{target} already exists; a new version needs a new folder (models are never overwritten)")
    kind = parent.config.extra.get("external")
    if kind == "nnunet":
        from .nnunet_plans import folder_name_problem

        problem = folder_name_problem(target.name)
        if problem:
            raise ExternalModelError(target, f"a fine-tuned nnU-Net model is an nnU-Net folder: {problem}")
    with new_folder_atomic(target, "model version") as tmp:
        (_write_nnunet if kind == "nnunet" else _write_monai)(model, parent, tmp, record)
        _write_json(tmp / PROVENANCE_FILE, {"created": _now(), "kind": kind, "parent_path": str(parent.bundle_path),
                                            **dict(record)})  # fmt: skip
    return target


def _write_nnunet(model, parent, folder: Path, record: Mapping[str, Any]) -> None:
    source = parent.folder.path
    for name in ("dataset.json", "plans.json", "dataset_fingerprint.json"):
        if (source / name).is_file():
            shutil.copyfile(source / name, folder / name)
    fold = model.active_fold
    checkpoint = dict(load_checkpoint(parent.folder.checkpoint(fold), source))
    checkpoint.update(network_weights=_weights(model.network), optimizer_state=None, grad_scaler_state=None)
    (folder / f"fold_{fold}").mkdir()
    _save(checkpoint, folder / f"fold_{fold}" / "checkpoint_final.pth")


def _write_monai(model, parent, folder: Path, record: Mapping[str, Any]) -> None:
    from .monai_files import bundle_folder

    with bundle_folder(Path(parent.bundle_path)) as source:
        for file in sorted(source.rglob("*")):
            relative = file.relative_to(source)
            if file.is_symlink() or not file.is_file() or relative in _STALE:
                continue  # links are not followed out of the bundle; the old weights are replaced
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, folder / relative)
    (folder / "models").mkdir(exist_ok=True)
    _save(_weights(model.network), folder / "models" / "model.pt")
    metadata_file = folder / _METADATA
    metadata = json.loads(metadata_file.read_text(encoding="utf-8"))
    old = str(metadata.get("version") or "0")
    new = f"{old}+ft{datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%d%H%M%S')}"
    steps = record.get("training", {}).get("steps") if isinstance(record.get("training"), Mapping) else None
    changelog = dict(metadata.get("changelog") or {})
    changelog[new] = f"fine-tuned with napari-medseg on sparse corrections ({steps} steps) from version {old}"
    metadata.update(version=new, changelog=changelog)
    metadata_file.unlink()
    _write_json(metadata_file, metadata)


def _weights(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in network.state_dict().items()}


def _save(data: Any, file: Path) -> None:
    torch.save(data, file)
    with open(file, "rb") as f:
        os.fsync(f.fileno())


def _write_json(file: Path, data: Mapping[str, Any]) -> None:
    with open(file, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
