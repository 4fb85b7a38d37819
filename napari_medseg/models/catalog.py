"""Where bundles live and how a name becomes a model.

Shipped bundles: ``resources/models/<name>/`` (read-only). User bundles:
``<user data dir>/models/<name>/``, where the user data dir is ``$NAPARI_MEDSEG_HOME`` when
set, else ``platformdirs.user_data_dir("napari-medseg")``. A name is looked up among the
shipped bundles first, then the user's.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .bundle import (
    CONFIG_FILE,
    META_FILE,
    BundleError,
    load_bundle,
    read_config,
    read_meta,
    resolve_device,
)

__all__ = [
    "DEFAULT_MODEL",
    "HOME_ENV",
    "BundleInfo",
    "delete_bundle",
    "list_bundles",
    "load_model",
    "rename_bundle",
    "resolve_bundle",
    "shipped_models_dir",
    "user_data_dir",
    "user_models_dir",
]

logger = logging.getLogger(__name__)

from ..resources import DEFAULT_MODEL  # noqa: E402

HOME_ENV = "NAPARI_MEDSEG_HOME"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class BundleInfo:
    """What ``medseg models`` lists about a bundle (read from its JSON files only).

    Attributes:
        name: folder name, the handle for :func:`load_model`.
        path: the bundle folder.
        architecture: registry key, e.g. ``"unet"``.
        classes: class names, background first.
        version: ``meta.json`` version, as text.
        shipped: True for bundles inside the package's resources (read-only).
        parent: ``meta.json`` parent id, or None.
    """

    name: str
    path: Path
    architecture: str
    classes: tuple[str, ...]
    version: str
    shipped: bool
    parent: str | None


def user_data_dir() -> Path:
    """``$NAPARI_MEDSEG_HOME`` if set, else the platform's user data folder for napari-medseg."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("napari-medseg"))


def user_models_dir() -> Path:
    """The folder of user-made bundles (it may not exist yet)."""
    return user_data_dir() / "models"


def shipped_models_dir() -> Path | None:
    """``resources/models``, or None when the package ships no models folder."""
    from ..resources import resources_dir

    try:
        folder = resources_dir() / "models"
    except FileNotFoundError:
        return None
    return folder if folder.is_dir() else None


def list_bundles() -> list[BundleInfo]:
    """Shipped bundles, then user bundles, each sorted by name; unreadable ones are skipped
    with a logged warning."""
    infos: list[BundleInfo] = []
    for folder, shipped in ((shipped_models_dir(), True), (user_models_dir(), False)):
        for path in _bundle_folders(folder):
            try:
                config, meta = read_config(path), read_meta(path)
            except BundleError as err:
                logger.warning("skipping unreadable bundle: %s", err)
                continue
            parent = meta.get("parent_id")
            infos.append(
                BundleInfo(
                    name=path.name,
                    path=path,
                    architecture=config.architecture,
                    classes=config.class_names,
                    version=str(meta.get("version", "")),
                    shipped=shipped,
                    parent=None if parent is None else str(parent),
                )
            )
    return infos


def resolve_bundle(name_or_path: str | os.PathLike) -> Path:
    """A bundle folder or ``.zip`` path for a path or a bundle name.

    Raises:
        BundleError: no such path, or an unknown name (the available names are listed).
    """
    path = Path(name_or_path)
    if path.is_dir() or (path.is_file() and path.suffix.lower() == ".zip"):
        return path
    text = os.fspath(name_or_path)
    if not _NAME.match(text):
        raise BundleError(text, "no such bundle folder or .zip archive")
    for folder in (shipped_models_dir(), user_models_dir()):
        if folder is not None and (folder / text / CONFIG_FILE).is_file():
            return folder / text
    names = sorted({info.name for info in list_bundles()})
    raise BundleError(text, f"unknown model; available: {names or 'none installed'}")


def load_model(
    name_or_path: str | os.PathLike, device: str | torch.device | None = None
) -> nn.Module:
    """Load a bundle by name or path onto ``device`` (None: cpu; ``"auto"``: cuda, mps, cpu).

    A path to an nnU-Net v2 trained-model folder or a MONAI bundle (folder or .zip) opens it
    as a model (:mod:`napari_medseg.models.external`; needs the ``nnunet`` or ``monai`` extra).

    The model is in eval mode and maps (B, C, *S) to logits (B, K, *S); it carries
    ``.config``, ``.bundle_meta`` and ``.bundle_path``.

    Raises:
        BundleError: see :func:`resolve_bundle` and
            :func:`~napari_medseg.models.bundle.load_bundle`.
        ValueError: a device this machine lacks.
    """
    from . import external

    if external.detect(name_or_path):  # an nnU-Net trained-model folder or a MONAI bundle
        return external.open_model(name_or_path, device=resolve_device(device))
    return load_bundle(resolve_bundle(name_or_path), device=resolve_device(device))


def rename_bundle(name: str, new_name: str) -> Path:
    """Rename a user bundle (folder and ``meta.json`` name); returns the new folder.

    Raises:
        BundleError: ``name`` is shipped (read-only) or unknown, or ``new_name`` is not a
            plain folder name.
        FileExistsError: a bundle called ``new_name`` exists already.
    """
    old = _user_bundle(name, "rename")
    if not isinstance(new_name, str) or not _NAME.match(new_name):
        raise BundleError(new_name, "new name must be letters, digits, '.', '_' or '-'")
    if any(info.name == new_name for info in list_bundles()):
        raise FileExistsError(f"a model bundle named {new_name!r} exists already")
    new = old.with_name(new_name)
    meta = read_meta(old)
    os.rename(old, new)
    meta["name"] = new_name
    tmp = new / f".{META_FILE}.tmp"
    tmp.write_text(_dump(meta), encoding="utf-8")
    os.replace(tmp, new / META_FILE)
    logger.info("renamed model bundle %s to %s", old, new)
    return new


def delete_bundle(name: str) -> None:
    """Delete a user bundle folder.

    Raises:
        BundleError: ``name`` is shipped (read-only) or unknown.
    """
    folder = _user_bundle(name, "delete")
    shutil.rmtree(folder)
    logger.info("deleted model bundle %s", folder)


def _user_bundle(name: str, action: str) -> Path:
    if not isinstance(name, str) or not _NAME.match(name):
        raise BundleError(str(name), f"cannot {action}: not a bundle name")
    folder = user_models_dir() / name
    if (folder / CONFIG_FILE).is_file():
        return folder
    shipped = shipped_models_dir()
    if shipped is not None and (shipped / name / CONFIG_FILE).is_file():
        raise BundleError(shipped / name, f"cannot {action} a shipped model; it is read-only")
    names = sorted(info.name for info in list_bundles() if not info.shipped)
    raise BundleError(name, f"cannot {action}: no user model of that name; user models: {names}")


def _bundle_folders(folder: Path | None) -> list[Path]:
    if folder is None or not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / CONFIG_FILE).is_file()
    )


def _dump(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
