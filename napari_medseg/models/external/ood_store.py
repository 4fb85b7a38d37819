"""The OOD calibration of external models, kept beside the user's settings.

An nnU-Net folder or a MONAI bundle comes without a calibrated out-of-distribution threshold
(our bundles carry one in ``config.extra["ood"]``, see :mod:`napari_medseg.uncertainty.ood`),
and its folder belongs to the user: nothing is written into it. Its calibration lives in
``<user data>/external/<digest>/ood.json`` instead (the user data folder is
``$NAPARI_MEDSEG_HOME`` when set, see :func:`~napari_medseg.models.catalog.user_data_dir`),
where ``<digest>`` is the sha256 of the files that decide what the model computes
(:func:`model_digest`): a retrained or edited model gets a new entry, a moved or copied one
keeps its own.

The file (JSON)::

    {"model": "/abs/path/as/opened", "kind": "nnunet", "digest": "<sha256>", "needed": 5,
     "scans": {"<scan key>": {"score": 0.12, "source": "ct.nii.gz", "added": "<ISO date>"}},
     "ood": {"score": "foreground_entropy", "threshold": 0.27, "calibration": {...}}}

``"scans"`` are the foreground-entropy scores recorded on first use, one per scan (the key
says which scan, see :func:`napari_medseg.uncertainty.ood_first_use.scan_key`); ``"ood"``
appears once ``needed`` of them are in (or after an explicit calibration) and is then what
``config.extra["ood"]`` holds when the model is opened (:func:`attach_store`). Changes are
written through a temporary file and a rename, under a lock (a cohort's workers may record
at once). A file that cannot be read, or holds something else, is reported with a warning
and calibration starts again; it never stops a segmentation.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from .errors import ExternalModelError

__all__ = [
    "FIRST_USE_SCANS", "STORE_FILE", "attach_store", "forget", "model_digest", "read_store", "record_score",
    "save_calibration", "store_file",
]  # fmt: skip

logger = logging.getLogger(__name__)

#: Scans recorded on first use before the threshold is computed from their scores.
FIRST_USE_SCANS = 5
STORE_FOLDER = "external"
STORE_FILE = "ood.json"
_LOCK_FILE = ".ood.lock"
_LOCK_WAIT_S = 10.0  # seconds a recording waits for another process's
_CHUNK = 1 << 20  # bytes read at a time while hashing


def model_digest(path: str | os.PathLike) -> str:
    """sha256 (hex) over the files that decide what an external model computes
    (:func:`~napari_medseg.models.external.model_files`: each one's name relative to the
    folder, its size and its bytes); for a .zip bundle, over the file itself.

    Raises:
        ExternalModelError: no such files (not an external model).
    """
    path = Path(path)
    files = [path] if path.is_file() else _model_files(path)
    if not files:
        raise ExternalModelError(path, "has none of the files that identify an nnU-Net folder or MONAI bundle")
    digest = hashlib.sha256()
    for file in files:
        name = "" if file == path else file.relative_to(path).as_posix()
        digest.update(f"{name}\0{file.stat().st_size}\0".encode())
        with open(file, "rb") as stream:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _model_files(path: Path) -> list[Path]:
    from . import model_files

    return model_files(path)


def store_file(path: str | os.PathLike) -> Path:
    """``<user data>/external/<model digest>/ood.json`` of the model at ``path`` (it may not
    exist yet). Hashes the model's files (about a second per GB)."""
    from ..catalog import user_data_dir

    return user_data_dir() / STORE_FOLDER / model_digest(path) / STORE_FILE


def read_store(file: str | os.PathLike) -> dict[str, Any]:
    """The store's content, ``{"scans": {}}`` when there is none yet. A file that is not
    JSON or not a store (malformed scans, an ``"ood"`` entry without a finite positive
    threshold) is reported with a warning and read as empty: calibration starts again and the
    next recording replaces it."""
    file = Path(file)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"scans": {}}
    except (OSError, ValueError) as err:
        return _start_again(file, f"it cannot be read ({err})")
    problem = _problem(data)
    return _start_again(file, problem) if problem else data


def _problem(data: Any) -> str | None:
    """What makes ``data`` no store, or None."""
    if not isinstance(data, dict) or not isinstance(data.get("scans", {}), dict):
        return "it is not a mapping with a 'scans' mapping"
    for key, scan in data.get("scans", {}).items():
        if not isinstance(scan, dict) or not _finite(scan.get("score")):
            return f"scan {key!r} has no finite score: {scan!r}"
    entry = data.get("ood")
    if entry is not None and not (isinstance(entry, dict) and isinstance(entry.get("score"), str)
                                  and _finite(entry.get("threshold")) and entry["threshold"] > 0):  # fmt: skip
        return f"its 'ood' entry {entry!r} has no score name and finite positive threshold"
    data.setdefault("scans", {})
    return None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _start_again(file: Path, why: str) -> dict[str, Any]:
    logger.warning("OOD calibration store %s is ignored: %s; calibration of this model starts again "
                   "(the file is replaced at the next recording; 'medseg models reset-ood MODEL' removes it)", file, why)  # fmt: skip
    return {"scans": {}}


def record_score(
    file: str | os.PathLike,
    key: str,
    score: float,
    *,
    calibrate: Callable[[Sequence[float]], dict[str, Any]],
    model: str | os.PathLike,
    kind: str,
    source: str = "",
    needed: int = FIRST_USE_SCANS,
) -> dict[str, Any]:
    """Add one scan's score (first use) and return the store as it is then.

    Nothing changes when the store holds a threshold already or the scan ``key`` is in it
    (a scan counts once). When the new score makes ``needed``, ``calibrate(scores)`` (the
    ``config.extra["ood"]`` entry for them) is stored under ``"ood"``.

    Args:
        key: the scan's identity; ``source``: its name for people.
        score: its foreground entropy (:data:`~napari_medseg.uncertainty.ood.MAIN_SCORE`), in [0, 1].
        model, kind: the model's path and kind (``"nnunet"``, ``"monai"``), recorded for people.

    Raises:
        OSError: the store cannot be written, or another process held its lock for
            :data:`_LOCK_WAIT_S` seconds (a ``FolderLockedError``).
    """
    file = Path(file)
    with _locked(file.parent):
        data = read_store(file)
        if data.get("ood") is not None or key in data["scans"]:
            return data
        data["scans"][key] = {"score": round(float(score), 6), "source": source, "added": _now()}
        if len(data["scans"]) >= needed:
            data["ood"] = calibrate([scan["score"] for scan in data["scans"].values()])
        _write(file, data, model, kind, needed)
    logger.info("OOD calibration of %s: %d of %d scans recorded in %s", model, len(data["scans"]), needed, file)
    return data


def save_calibration(file: str | os.PathLike, entry: Mapping[str, Any], scans: Mapping[str, Mapping[str, Any]], *,
                     model: str | os.PathLike, kind: str) -> dict[str, Any]:  # fmt: skip
    """Replace the store with an explicit calibration: ``entry`` (the ``"ood"`` entry) and
    the ``scans`` it came from (key -> ``{"score", "source"}``). Returns the store.

    Raises:
        OSError: the store cannot be written.
    """
    file = Path(file)
    data = {"scans": {key: {**scan, "added": _now()} for key, scan in scans.items()}, "ood": dict(entry)}
    with _locked(file.parent):
        _write(file, data, model, kind, len(data["scans"]))
    return data


def forget(file: str | os.PathLike) -> bool:
    """Remove a model's store (its threshold and recorded scores); False when it had none."""
    file = Path(file)
    if not file.parent.is_dir():
        return False
    with _locked(file.parent):
        existed = file.exists()
        file.unlink(missing_ok=True)
    (file.parent / _LOCK_FILE).unlink(missing_ok=True)
    try:
        file.parent.rmdir()
    except OSError:  # something else lies there: leave it
        pass
    return existed


def attach_store(model: Any, path: str | os.PathLike) -> Any:
    """Give an opened external ``model`` its store: ``model.ood_store`` (the file, None when
    the user data folder cannot be used) and, once calibrated, ``config.extra["ood"]``.
    Never raises: a model opens whatever its store holds. Returns ``model``."""
    model.ood_store = None
    try:
        file = store_file(path)
    except (OSError, ExternalModelError) as err:
        logger.warning("no OOD calibration for %s: its store cannot be found (%s)", path, err)
        return model
    model.ood_store = file
    entry = read_store(file).get("ood")
    if entry is not None:
        model.config = replace(model.config, extra={**model.config.extra, "ood": entry})
    return model


def _write(file: Path, data: dict[str, Any], model: str | os.PathLike, kind: str, needed: int) -> None:
    from ...io.atomic import write_text_atomic

    about = {"model": str(Path(model).absolute()), "kind": kind, "digest": file.parent.name, "needed": needed}
    write_text_atomic(file, json.dumps({**about, **data, **about}, indent=2))


@contextmanager
def _locked(folder: Path):
    """Hold ``folder``'s store lock (created with the folder), waiting up to
    :data:`_LOCK_WAIT_S` seconds for another process."""
    from ...io.folder_lock import FolderLock, FolderLockedError

    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + _LOCK_WAIT_S
    lock = FolderLock(folder / _LOCK_FILE, what=f"OOD calibration store {folder}")
    while True:
        try:
            lock.acquire()
            break
        except FolderLockedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        yield
    finally:
        lock.release()


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
