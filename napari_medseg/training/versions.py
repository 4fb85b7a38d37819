"""Versioned bundles: every fine-tune is written as a new bundle that names its parent.

A version's ``meta.json`` holds, besides what :func:`~napari_medseg.models.save_bundle`
writes: ``parent_id``, ``parent_name``, ``parent_weights_sha256`` (of the parent's
``weights.pt``), ``version`` (the parent's + 1), and the fine-tune's ``training`` record
(steps, stop, annotated voxels per class, forgetting guard, learning rate, seed...) and
``metrics`` (accuracy and per-class Dice on the annotated voxels, before and after). The
parent and anything under the package's ``resources/`` are never written: bundles are
written into a temporary sibling folder and renamed into place, and never overwrite.

Default location: ``user_models_dir() / "<parent name>-ft-<UTC timestamp>"``
(``$NAPARI_MEDSEG_HOME/models`` when set, else the platform's user data folder), so a
version is found by name like any bundle. Listing, renaming and deleting versions go
through :mod:`napari_medseg.models.catalog` (``medseg models``); :func:`lineage` and
:func:`descendants` follow the parent links, :func:`latest_version` picks the newest
descendant to switch to (``load_model(latest_version(name).name)``).
"""

from __future__ import annotations

import datetime
import hashlib
import io
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.bundle import META_FILE, WEIGHTS_FILE, read_meta, save_bundle, weights_sha256
from ..models.catalog import BundleInfo, list_bundles, resolve_bundle, user_models_dir

__all__ = [
    "default_version_path",
    "descendants",
    "latest_version",
    "lineage",
    "parent_identity",
    "reserve_version",
    "save_result",
    "save_version",
]

_FT_SUFFIX = re.compile(r"-ft-\d{8}-\d{6}(?:-\d+)?$")


def parent_identity(parent: nn.Module) -> dict[str, Any]:
    """``parent_id``, ``parent_name``, ``parent_weights_sha256`` and the parent's version.

    From the parent's ``bundle_meta`` / ``bundle_path`` when it was loaded from a bundle
    (the hash of its ``weights.pt``); for a model built in memory the id and name are None
    and the hash is that of its state dict as ``torch.save`` writes it.
    """
    meta = getattr(parent, "bundle_meta", None) or {}
    path = getattr(parent, "bundle_path", None)
    digest = None
    if path is not None and (Path(path) / WEIGHTS_FILE).is_file():
        digest = weights_sha256(Path(path))
    elif isinstance(meta.get("weights_sha256"), str):
        digest = meta["weights_sha256"]
    else:
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in parent.state_dict().items()}, buffer)
        digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    name = meta.get("name") or (Path(path).name.removesuffix(".zip") if path is not None else None)
    return {"parent_id": meta.get("id"), "parent_name": name, "parent_weights_sha256": digest, "parent_version": _version(meta)}


def default_version_path(parent: nn.Module, folder: str | os.PathLike | None = None) -> Path:
    """``<folder or user_models_dir()>/<root name>-ft-<YYYYmmdd-HHMMSS>`` (``-2``... if taken).

    The root name is the parent's name without an earlier ``-ft-<timestamp>`` suffix, so
    versions of versions stay short.
    """
    from ..models.external import is_external

    folder = Path(folder) if folder is not None else user_models_dir()
    name = parent_identity(parent)["parent_name"] or "model"
    root = _FT_SUFFIX.sub("", name)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    if is_external(parent) and parent.config.extra.get("external") == "nnunet":  # keeps nnU-Net's folder naming
        from ..models.external.finetuned import nnunet_version_path

        def named(suffix: str) -> Path:
            return nnunet_version_path(parent, folder, stamp + suffix)
    else:

        def named(suffix: str) -> Path:
            return folder / f"{root}-ft-{stamp}{suffix}"

    candidate, counter = named(""), 2
    while candidate.exists() or _lock_file(candidate).exists():  # taken, or reserved by a running fine-tune
        candidate, counter = named(f"-{counter}"), counter + 1
    return candidate


@contextmanager
def reserve_version(target: str | os.PathLike, parent: nn.Module | None = None) -> Iterator[Path]:
    """Hold the bundle folder ``target`` for this process until the version is written.

    Called before a fine-tune starts, so that a run that would lose the race for its output
    fails at once instead of after its whole training: ``target`` must not exist, lie
    outside the package's resources (and the parent's bundle), and no other run may hold
    it (a lock file ``.<name>.lock`` beside it, see :class:`~napari_medseg.io.folder_lock.FolderLock`).

    Raises:
        FileExistsError: ``target`` exists (bundles are never overwritten).
        FolderLockedError: another run holds ``target``; names the lock file and its holder.
        ValueError: ``target`` is inside a protected folder.
    """
    from ..io.folder_lock import FolderLock

    target = Path(target)
    _refuse_protected(target, parent)
    if target.exists():
        raise FileExistsError(f"{target} already exists; a new version needs a new folder (bundles are never overwritten)")
    _refuse_foreign_name(target, parent)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot create the folder of the new bundle {target}: {exc.strerror or exc}") from None
    with FolderLock(_lock_file(target), what=f"model bundle {target}"):
        yield target


def _refuse_foreign_name(target: Path, parent: nn.Module | None) -> None:
    """An nnU-Net model's version is an nnU-Net folder, whose name nnU-Net parses."""
    from ..models.external import is_external

    if parent is not None and is_external(parent) and parent.config.extra.get("external") == "nnunet":
        from ..models.external.nnunet_plans import folder_name_problem

        problem = folder_name_problem(target.name)
        if problem:
            raise ValueError(f"{target}: a fine-tuned nnU-Net model is written as an nnU-Net folder; {problem}")


def _lock_file(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


def save_version(
    model: nn.Module,
    parent: nn.Module,
    *,
    name: str | None = None,
    out: str | os.PathLike | None = None,
    meta_extra: Mapping[str, Any] | None = None,
    half: bool = False,
) -> Path:
    """Write ``model`` as a new version of ``parent``; returns the new bundle folder.

    Args:
        model: the fine-tuned model (with ``.config``).
        parent: the model it was fine-tuned from (only read).
        name: folder name inside the user models folder (default: see
            :func:`default_version_path`); ignored when ``out`` is given.
        out: the bundle folder to create, anywhere (``-o`` of ``medseg finetune``).
        meta_extra: more ``meta.json`` entries, e.g. :meth:`FinetuneResult.meta`.
        half: store float16 weights.

    Raises:
        ValueError: the target is inside the package's ``resources/`` or inside the
            parent's bundle, or ``name`` is not a plain folder name.
        FileExistsError: the target exists (bundles are never overwritten).
    """
    if out is not None:
        target = Path(out)
    elif name is not None:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", name):
            raise ValueError(f"bundle name {name!r} must be letters, digits, '.', '_' or '-'")
        target = user_models_dir() / name
    else:
        target = default_version_path(parent)
    _refuse_protected(target, parent)
    identity = parent_identity(parent)
    meta = {
        "parent_id": identity["parent_id"],
        "parent_name": identity["parent_name"],
        "parent_weights_sha256": identity["parent_weights_sha256"],
        "version": identity["parent_version"] + 1,
        **dict(meta_extra or {}),
    }
    from ..models.external import is_external

    if is_external(parent):  # written back in the model's own format (float32)
        from ..models.external.finetuned import write_version

        return write_version(model, parent, target, meta)
    return save_bundle(model, target, meta=meta, half=half)


def save_result(
    result,
    parent: nn.Module,
    *,
    name: str | None = None,
    out: str | os.PathLike | None = None,
    save_on_stop: bool = True,
    half: bool = False,
) -> Path | None:
    """Save a :class:`~napari_medseg.training.records.FinetuneResult` with its record;
    None (nothing written) when the run was stopped and ``save_on_stop`` is False."""
    if result.stopped and not save_on_stop:
        return None
    return save_version(result.model, parent, name=name, out=out, meta_extra=result.meta(), half=half)


def lineage(name_or_path: str | os.PathLike) -> list[dict[str, Any]]:
    """The ``meta.json`` of a bundle and of its known ancestors, newest first.

    Ancestors are looked up among the installed bundles (shipped and user) by ``parent_id``;
    the chain ends at a bundle without a parent or whose parent is not installed.
    """
    by_id = _metas_by_id()
    meta = read_meta(resolve_bundle(name_or_path))
    chain = [meta]
    seen = {meta.get("id")}
    while meta.get("parent_id") in by_id and meta["parent_id"] not in seen:
        meta = by_id[meta["parent_id"]][1]
        seen.add(meta.get("id"))
        chain.append(meta)
    return chain


def descendants(name_or_path: str | os.PathLike) -> list[BundleInfo]:
    """Installed bundles fine-tuned from this one, directly or not, oldest first."""
    root_id = read_meta(resolve_bundle(name_or_path)).get("id")
    entries = _metas_by_id()
    children: dict[Any, list[str]] = {}
    for key, (_, meta) in entries.items():
        children.setdefault(meta.get("parent_id"), []).append(key)
    found, queue = [], list(children.get(root_id, []))
    while queue:
        key = queue.pop(0)
        if key in found or key == root_id:
            continue
        found.append(key)
        queue.extend(children.get(key, []))
    found.sort(key=lambda key: (str(entries[key][1].get("created", "")), _version(entries[key][1])))
    return [entries[key][0] for key in found]


def latest_version(name_or_path: str | os.PathLike) -> BundleInfo | None:
    """The most recently created descendant of a bundle, or None when it has none."""
    found = descendants(name_or_path)
    return found[-1] if found else None


def _version(meta: Mapping[str, Any]) -> int:
    try:
        return int(meta.get("version", 1))
    except (TypeError, ValueError):
        return 1


def _metas_by_id() -> dict[Any, tuple[BundleInfo, dict[str, Any]]]:
    entries = {}
    for info in list_bundles():
        meta = read_meta(info.path)
        if meta.get("id") is not None:
            entries[meta["id"]] = (info, meta)
    return entries


def _refuse_protected(target: Path, parent: nn.Module | None) -> None:
    resolved = target.expanduser().resolve()
    protected = []
    try:
        from ..resources import resources_dir

        protected.append(("the package's resources", resources_dir().resolve()))
    except FileNotFoundError:
        pass
    package = Path(__file__).resolve().parents[1]
    protected += [("the package's resources", package / "resources"), ("the package's resources", package.parent / "resources")]
    parent_path = getattr(parent, "bundle_path", None)
    if parent_path is not None:
        protected.append(("the parent bundle", Path(parent_path).resolve()))
    for what, folder in protected:
        if resolved == folder or folder in resolved.parents:
            raise ValueError(f"refusing to write a bundle at {target}: it is inside {what} ({folder}), which is never modified")
    if (resolved / META_FILE).exists():
        raise FileExistsError(f"model bundle {target} already exists; bundles are never overwritten")
