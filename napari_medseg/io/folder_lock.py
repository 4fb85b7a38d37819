"""An exclusive lock on an output location, so that two runs never write into it together.

The lock is a small file (``pid``, ``host`` and ``created`` as JSON) held with
``fcntl.flock``: the kernel releases it when its process ends, however it ends, so a lock
file left by a killed run is recognised (it exists but nobody holds it) and taken over with
a warning naming the run that left it. A second run fails at once with
:class:`FolderLockedError`, which names the lock file and its holder.

Where ``fcntl`` is missing (Windows) the file is created with ``O_CREAT | O_EXCL`` instead;
a lock left by a killed run must then be deleted by hand (the error says which file).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["FolderLock", "FolderLockedError"]

logger = logging.getLogger(__name__)


class FolderLockedError(OSError):
    """Another run holds the lock; the message names the lock file and the holder."""


class FolderLock:
    """Exclusive lock held through a lock file; a context manager.

    Args:
        path: the lock file, e.g. ``<output folder>/.medseg.lock``; its folder must exist.
        what: what the lock protects, for messages (e.g. "output folder out/").

    Example:
        >>> with FolderLock(folder / ".medseg.lock", what=f"output folder {folder}"):
        ...     write_outputs()
    """

    def __init__(self, path: str | os.PathLike, *, what: str | None = None) -> None:
        self.path = Path(path)
        self.what = what or str(self.path.parent)
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock or raise :class:`FolderLockedError` at once (never waits)."""
        if self._fd is not None:
            raise RuntimeError(f"lock {self.path} is already held by this object")
        self._fd = _acquire_flock(self.path, self.what) if fcntl is not None else _acquire_exclusive(self.path, self.what)
        os.ftruncate(self._fd, 0)
        os.write(self._fd, json.dumps(_holder()).encode())
        os.fsync(self._fd)

    def release(self) -> None:
        """Remove the lock file and let go; safe to call twice."""
        if self._fd is None:
            return
        # unlink while still holding it: a run that opened the old file sees it replaced and retries
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


def _acquire_flock(path: Path, what: str) -> int:
    """Open and flock ``path``; retried when the file was replaced between open and lock."""
    for _ in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise FolderLockedError(_locked_message(path, what, holder)) from None
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            _warn_if_stale(path, _read_holder(fd))
            return fd
        os.close(fd)  # the holder removed it after we opened it: lock the new file
    raise FolderLockedError(f"{what} is busy: lock file {path} keeps changing; try again")


def _acquire_exclusive(path: Path, what: str) -> int:  # pragma: no cover - Windows
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        holder = json.loads(path.read_text() or "{}") if path.is_file() else {}
        raise FolderLockedError(
            _locked_message(path, what, holder) + f"; if no such run is going on, delete {path}"
        ) from None


def _holder() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _read_holder(fd: int) -> dict[str, Any]:
    """The holder recorded in an open lock file ({} when empty or unreadable)."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        data = json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _locked_message(path: Path, what: str, holder: dict[str, Any]) -> str:
    who = (
        f"process {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('created', '?')}"
        if holder
        else "another process"
    )
    return f"{what} is in use by {who} (lock file {path}); wait for that run to finish or choose another folder"


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _warn_if_stale(path: Path, holder: dict[str, Any]) -> None:
    """A lock file nobody holds that names a run: that run ended without releasing it."""
    if holder:
        logger.warning(
            "taking over lock file %s left by process %s on %s (%s), which is no longer running",
            path, holder.get("pid", "?"), holder.get("host", "?"), holder.get("created", "?"),
        )  # fmt: skip
