"""The files of a MONAI bundle: finding them in a folder or a .zip, and reading its configs.

A bundle is a folder (or a .zip holding one, or holding its contents at the top) with
``configs/metadata.json``, an inference config ``configs/inference.json`` (or ``.yaml``,
``.yml``) and weights ``models/model.pt``. Detection reads names only; configs are read
as data (JSON, or YAML through ``yaml.safe_load``), never run. Nothing here imports MONAI.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from ..archive import unpack_archive
from .errors import ExternalModelError

__all__ = [
    "INFERENCE_CONFIGS", "METADATA", "WEIGHTS", "TORCHSCRIPT", "bundle_folder", "find_monai_bundles",
    "is_monai_bundle", "read_config_file",
]  # fmt: skip

METADATA = "configs/metadata.json"
INFERENCE_CONFIGS = ("configs/inference.json", "configs/inference.yaml", "configs/inference.yml")
WEIGHTS = "models/model.pt"
TORCHSCRIPT = "models/model.ts"
_MARKERS = (METADATA, *INFERENCE_CONFIGS)
_MAX_CONFIG_BYTES = 16 << 20  # a config larger than this is not a config


def is_monai_bundle(path: str | os.PathLike) -> bool:
    """True for a folder, or a .zip, with ``configs/metadata.json`` or an inference config
    (at its top or in one folder inside); reads names only."""
    path = Path(path)
    if path.is_dir():
        return any((path / marker).is_file() for marker in _MARKERS)
    if path.is_file() and path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError):
            return False
        return _archive_root(names) is not None
    return False


def _archive_root(names: list[str]) -> str | None:
    """The member prefix ("" or "folder/") under which an archive holds a bundle, or None."""
    found = set()
    for name in names:
        parts = PurePosixPath(name).parts
        for depth in (0, 1):
            if len(parts) == depth + 2 and "/".join(parts[depth:]) in _MARKERS:
                found.add("/".join(parts[:depth]) + ("/" if depth else ""))
    return found.pop() if len(found) == 1 else None


@contextlib.contextmanager
def bundle_folder(path: Path) -> Iterator[Path]:
    """The bundle's folder: ``path`` itself, or a checked unpacking of a .zip (removed after).

    Raises:
        ExternalModelError: an unsafe archive (see :func:`~napari_medseg.models.archive.unpack_archive`)
            or one that holds no single bundle.
    """
    if path.is_dir():
        yield path
        return
    try:
        with zipfile.ZipFile(path) as zf:
            root = _archive_root(zf.namelist())
    except (zipfile.BadZipFile, OSError) as err:
        raise ExternalModelError(path, f"not a readable MONAI bundle folder or zip archive: {err}") from None
    if root is None:
        raise ExternalModelError(path, f"holds no single MONAI bundle ({METADATA} and {INFERENCE_CONFIGS[0]})")
    with tempfile.TemporaryDirectory(prefix="medseg-monai-") as tmp:
        unpack_archive(path, Path(tmp), ExternalModelError)
        yield Path(tmp) / root


def read_config_file(folder: Path, names: tuple[str, ...], label: Path) -> tuple[str, Mapping[str, Any]]:
    """The first of ``names`` present in ``folder``, parsed: (its name, its top-level mapping).

    Raises:
        ExternalModelError: none present, too large, unparsable, or not a mapping.
    """
    name = next((n for n in names if (folder / n).is_file()), None)
    if name is None:
        raise ExternalModelError(label, f"{' or '.join(names)} is missing")
    file = folder / name
    if file.stat().st_size > _MAX_CONFIG_BYTES:
        raise ExternalModelError(label, f"{name} is over {_MAX_CONFIG_BYTES} bytes")
    try:
        text = file.read_text(encoding="utf-8")
        data = json.loads(text) if name.endswith(".json") else _safe_yaml(text, label)
    except ExternalModelError:
        raise
    except Exception as err:  # json and yaml raise their own error types
        raise ExternalModelError(label, f"{name} could not be read: {err}") from None
    if not isinstance(data, Mapping):
        raise ExternalModelError(label, f"{name} must hold a mapping at its top, not {type(data).__name__}")
    return name, data


def _safe_yaml(text: str, label: Path) -> Any:
    try:
        import yaml
    except ImportError:
        raise ExternalModelError(label, "reading its YAML config needs PyYAML (pip install pyyaml)") from None
    return yaml.safe_load(text)


def find_monai_bundles(root: str | os.PathLike) -> list[Path]:
    """Bundle folders directly under ``root`` (names only are read)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".") and is_monai_bundle(p)]
