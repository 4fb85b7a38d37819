"""Model bundles: a folder (or a .zip of one) with ``config.json``, ``weights.pt``, ``meta.json``.

``weights.pt`` is a plain state dict of tensors, read only with ``torch.load(...,
weights_only=True)``: a file that would need code to unpickle is refused. Bundles are written
into a temporary sibling folder and renamed into place, and never overwritten.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import pickle
import re
import tempfile
import uuid
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ModelConfig
from ..io.atomic import new_folder_atomic
from .archive import unpack_archive
from .registry import build_model

__all__ = [
    "CONFIG_FILE",
    "META_FILE",
    "WEIGHTS_FILE",
    "BundleError",
    "archive_bundle",
    "load_bundle",
    "read_config",
    "read_meta",
    "resolve_device",
    "save_bundle",
    "weights_sha256",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.pt"
META_FILE = "meta.json"
BUNDLE_FORMAT = 1
_LISTED = 5  # how many bad keys an error message lists


class BundleError(ValueError):
    """A bundle could not be read or written; names the bundle path and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"model bundle {self.path}: {problem}")

    def __reduce__(self):  # pickles with its fields: reaches a caller from a worker process as itself
        return type(self), (self.path, self.problem)


def weights_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a weights file, or of ``weights.pt`` inside a bundle folder."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` -> cpu; ``"auto"`` -> cuda, then mps, then cpu; else that device if present.

    Raises:
        ValueError: an unknown device name, or a device this machine lacks.
    """
    if device is None:
        return torch.device("cpu")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a torch device name (try 'auto')") from None
    available = {
        "cuda": torch.cuda.is_available,
        "mps": lambda: getattr(torch.backends, "mps", None) is not None
        and torch.backends.mps.is_available(),
    }
    if resolved.type in available and not available[resolved.type]():
        raise ValueError(f"device {device!r} is not available on this machine")
    return resolved


def save_bundle(
    model: nn.Module, path: str | os.PathLike, *, meta: Mapping[str, Any], half: bool = False
) -> Path:
    """Write ``model`` (which must carry ``.config``) as a new bundle folder ``path``.

    ``meta.json`` gets ``id`` (new), ``name`` (the folder name), ``version`` (1),
    ``parent_id`` / ``parent_weights_sha256`` (None), ``created`` (ISO, UTC), ``training`` and
    ``metrics`` ({}), overridden by ``meta``; then ``weights_sha256``, ``weights_dtype`` and
    ``format`` are set. ``half=True`` stores floating tensors as float16 (half the file size;
    a tensor that would overflow stays float32).

    Returns:
        The bundle folder.

    Raises:
        FileExistsError: ``path`` exists (bundles are never overwritten).
        BundleError: the model has no ``ModelConfig`` or ``meta`` is not JSON data.
    """
    path = Path(path)
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise BundleError(path, "the model has no .config (a ModelConfig); use build_model")
    if path.exists():
        raise FileExistsError(f"model bundle {path} already exists; bundles are never overwritten")
    with new_folder_atomic(path, "model bundle") as tmp:
        state = _state_for_saving(model, half)
        torch.save(state, tmp / WEIGHTS_FILE)
        full_meta = {
            "id": uuid.uuid4().hex,
            "name": path.name,
            "version": 1,
            "parent_id": None,
            "parent_weights_sha256": None,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "training": {},
            "metrics": {},
            **dict(meta),
            "weights_sha256": weights_sha256(tmp / WEIGHTS_FILE),
            "weights_dtype": "float16" if half else "float32",
            "format": BUNDLE_FORMAT,
        }
        try:
            meta_text = json.dumps(full_meta, indent=2, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise BundleError(path, f"meta {dict(meta)!r} is not JSON data: {err}") from None
        _write_text(tmp / CONFIG_FILE, config.to_json())
        _write_text(tmp / META_FILE, meta_text)
        _fsync(tmp / WEIGHTS_FILE)
    logger.info("saved model bundle %s (%s)", path, full_meta["weights_dtype"])
    return path


def load_bundle(path: str | os.PathLike, device: str | torch.device | None = None) -> nn.Module:
    """Load a bundle folder or ``.zip`` archive into a model in eval mode on ``device``.

    The model carries ``.config`` (ModelConfig), ``.bundle_meta`` (dict from ``meta.json``)
    and ``.bundle_path`` (the folder or archive given). Float16 weights come back as float32.

    Raises:
        BundleError: missing folder or file, invalid JSON or config, weights that are not a
            plain state dict of tensors (pickled code is never run), a checksum or
            architecture mismatch, an unsafe archive. The message names the path.
    """
    path = Path(path)
    target = resolve_device(device)
    if path.is_dir():
        model = _load_folder(path, label=path)
    elif path.is_file() and path.suffix.lower() == ".zip":
        with tempfile.TemporaryDirectory(prefix="medseg-bundle-") as tmp:
            model = _load_folder(_extract_archive(path, Path(tmp)), label=path)
    else:
        raise BundleError(path, "no such bundle folder or .zip archive")
    model.bundle_path = path
    return model.to(target)


def read_config(folder: str | os.PathLike, label: str | os.PathLike | None = None) -> ModelConfig:
    """The validated ``config.json`` of a bundle folder (``label`` names it in errors)."""
    folder = Path(folder)
    data = _read_json(folder / CONFIG_FILE, label or folder)
    from ..postprocess.settings import PostprocessSettings

    try:
        config = ModelConfig.from_dict(data)
        PostprocessSettings.offered(config)  # refused here, not halfway through a segmentation
    except ValueError as err:
        raise BundleError(label or folder, f"{CONFIG_FILE}: {err}") from None
    return config


def read_meta(folder: str | os.PathLike, label: str | os.PathLike | None = None) -> dict:
    """The ``meta.json`` of a bundle folder, as a dict."""
    folder = Path(folder)
    data = _read_json(folder / META_FILE, label or folder)
    if not isinstance(data, dict):
        raise BundleError(label or folder, f"{META_FILE} must hold a JSON object, not {data!r}")
    return data


def archive_bundle(folder: str | os.PathLike, archive: str | os.PathLike) -> Path:
    """Zip a bundle folder into ``archive`` (members ``<folder name>/<file>``).

    Raises:
        FileExistsError: ``archive`` exists.
        BundleError: ``folder`` is not a readable bundle.
    """
    folder, archive = Path(folder), Path(archive)
    read_config(folder)
    if archive.exists():
        raise FileExistsError(f"archive {archive} already exists; not overwritten")
    tmp = archive.with_name(f".{archive.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for file in sorted(p for p in folder.rglob("*") if p.is_file()):
                zf.write(file, f"{folder.name}/{file.relative_to(folder).as_posix()}")
        os.rename(tmp, archive)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return archive


def _load_folder(folder: Path, label: Path) -> nn.Module:
    config = read_config(folder, label)
    meta = read_meta(folder, label)
    state = _read_weights(folder / WEIGHTS_FILE, label, meta.get("weights_sha256"))
    try:
        model = build_model(config)
    except ValueError as err:
        raise BundleError(label, f"{CONFIG_FILE}: {err}") from None
    expected = model.state_dict()
    _check_state(state, expected, config.architecture, label)
    model.load_state_dict(
        {k: v.to(expected[k].dtype) if v.is_floating_point() else v for k, v in state.items()}
    )
    model.eval()
    model.bundle_meta = meta
    logger.info("loaded model bundle %s (%s)", label, config.architecture)
    return model


def _read_json(file: Path, label: str | os.PathLike) -> Any:
    if not file.parent.is_dir():
        raise BundleError(label, "no such bundle folder")
    if not file.is_file():
        raise BundleError(label, f"{file.name} is missing")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(label, f"{file.name} is not valid JSON: {err}") from None


def _read_weights(file: Path, label: Path, sha256: Any) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise BundleError(label, f"{WEIGHTS_FILE} is missing")
    if isinstance(sha256, str) and weights_sha256(file) != sha256:
        raise BundleError(label, f"{WEIGHTS_FILE} does not match the sha256 in {META_FILE}")
    try:
        state = torch.load(file, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        raise BundleError(
            label,
            f"{WEIGHTS_FILE} is not a plain state dict of tensors; refused to unpickle it "
            f"({_unpickling_reason(err)})",
        ) from None
    except Exception as err:  # torch raises many types for a corrupt file
        raise BundleError(label, f"{WEIGHTS_FILE} could not be read: {err}") from None
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise BundleError(
            label, f"{WEIGHTS_FILE} is not a state dict of tensors (found {type(state).__name__})"
        )
    return dict(state)


def _unpickling_reason(err: Exception) -> str:
    """The useful line of torch's weights-only error (not its advice to disable the check)."""
    match = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(err))
    reason = match.group(1).split(". ")[0] if match else type(err).__name__
    return reason[:200]


def _check_state(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    architecture: str,
    label: Path,
) -> None:
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{what} ({len(items)}): " + ", ".join(items[:_LISTED] + ["..."] * (len(items) > _LISTED))
        for what, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", shapes),
        )
        if items
    ]
    if problems:
        raise BundleError(
            label,
            f"{WEIGHTS_FILE} does not fit architecture {architecture!r}: " + "; ".join(problems),
        )


def _state_for_saving(model: nn.Module, half: bool) -> dict[str, torch.Tensor]:
    state = {}
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu").clone().contiguous()
        if half and value.is_floating_point():
            halved = value.half()
            if torch.isfinite(halved).all() or not torch.isfinite(value).all():
                value = halved
            else:
                logger.warning("kept %s in float32: its values overflow float16", key)
        state[key] = value
    return state


def _extract_archive(archive: Path, dest: Path) -> Path:
    """Unpack a bundle archive safely into ``dest``; return the folder holding config.json."""
    unpack_archive(archive, dest, BundleError)
    if (dest / CONFIG_FILE).is_file():
        return dest
    candidates = [d for d in dest.iterdir() if d.is_dir() and (d / CONFIG_FILE).is_file()]
    if len(candidates) != 1:
        raise BundleError(archive, f"archive holds no single bundle folder with {CONFIG_FILE}")
    return candidates[0]


def _write_text(file: Path, text: str) -> None:
    with open(file, "w", encoding="utf-8") as f:
        f.write(text + "\n")
        f.flush()
        os.fsync(f.fileno())


def _fsync(file: Path) -> None:
    with open(file, "rb") as f:
        os.fsync(f.fileno())
