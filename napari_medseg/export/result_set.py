"""The result files of one case, written as a set: all of them or none.

:class:`ResultSet` locks the output folder (:class:`~napari_medseg.io.folder_lock.FolderLock`,
``.medseg.lock``), refuses to replace a case's earlier results unless asked to, has every
file written into a hidden staging folder inside the output folder, and moves them in with
``os.replace`` (atomic per file, same file system) when all were written: the file named
``last`` (the report) goes in last, as the mark that the set is complete, and an earlier
set's mark goes first. A failed write, an error or Ctrl-C before :meth:`ResultSet.commit`
leaves the folder as it was; Ctrl-C during the commit (a few renames) is held back until
the commit is done, so the folder holds the old set or the new one, never a mix.

Example:
    >>> with ResultSet(out, ["case_seg.nii.gz", "case_report.json"], overwrite=False) as results:
    ...     results.write("case_seg.nii.gz", lambda path: write_volume(path, labels, volume))
    ...     results.write("case_report.json", lambda path: write_json(path, report))
    ...     paths = results.commit(last="case_report.json")
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import signal
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..io.folder_lock import FolderLock, FolderLockedError

__all__ = ["LOCK_NAME", "ResultSet", "ResultSetError", "ResultsExistError"]

logger = logging.getLogger(__name__)

LOCK_NAME = ".medseg.lock"
_STAGING_PREFIX = ".medseg-staging-"


class ResultSetError(OSError):
    """A result file could not be written or moved in; the message names it."""


class ResultsExistError(FileExistsError):
    """Earlier results would be replaced and ``overwrite`` is False; names the file."""


class ResultSet:
    """Write a case's files into ``folder`` as one set (see the module docstring).

    Args:
        folder: the output folder (created if missing).
        family: glob patterns, relative to ``folder``, of every file an earlier run for the
            same case may have left (e.g. ``case_gradcam_*.nii.gz``); any such file refuses
            the run unless ``overwrite``, and with ``overwrite`` those the new set does not
            write are removed when it is committed, so no old file is left beside the new set.
        overwrite: replace earlier results instead of refusing.
    """

    def __init__(self, folder: str | os.PathLike, family: Sequence[str], *, overwrite: bool = False) -> None:
        self.folder = Path(folder)
        self.family = tuple(family)
        self.overwrite = overwrite
        self.lock = FolderLock(self.folder / LOCK_NAME, what=f"output folder {self.folder}")
        self.staging: Path | None = None
        self._written: list[str] = []

    def __enter__(self) -> ResultSet:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ResultSetError(f"could not create output folder {self.folder}: {_reason(exc)}") from None
        try:
            self.lock.acquire()
        except FolderLockedError:
            raise
        except OSError as exc:
            raise ResultSetError(f"could not write into output folder {self.folder}: {_reason(exc)}") from None
        try:
            self._remove_leftover_staging()
            self._refuse_existing()
            self.staging = self.folder / f"{_STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
            try:
                self.staging.mkdir()
            except OSError as exc:
                raise ResultSetError(f"could not write into output folder {self.folder}: {_reason(exc)}") from None
        except BaseException:
            self.lock.release()
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            if self.staging is not None:
                shutil.rmtree(self.staging, ignore_errors=True)
                self.staging = None
        finally:
            self.lock.release()

    def existing(self) -> list[Path]:
        """Files of this case already in the folder, sorted."""
        found = {self.folder / name for pattern in self.family for name in glob.glob(pattern, root_dir=self.folder)}
        return sorted(p for p in found if p.is_file())

    def write(self, name: str, writer: Callable[[Path], Any]) -> Path:
        """Call ``writer(staged_path)`` to write output ``name``; returns its final path.

        Raises:
            ResultSetError: the writer failed with an OSError (disk full, permissions);
                the message names the final file and the reason.
        """
        if self.staging is None:
            raise RuntimeError("ResultSet.write outside its with-block")
        if Path(name).name != name or name.startswith("."):
            raise ValueError(f"output name {name!r} must be a plain file name")
        final = self.folder / name
        try:
            writer(self.staging / name)
        except OSError as exc:
            raise ResultSetError(f"could not write {final}: {_reason(exc)}; no result of this run was kept") from exc
        except ValueError as exc:
            problem = getattr(exc, "problem", None)  # io's VolumeWriteError names the staged file
            if problem is None:
                raise
            raise ValueError(f"could not write {final}: {problem}") from exc
        self._written.append(name)
        return final

    def commit(self, *, last: str) -> dict[str, Path]:
        """Move every written file into the folder, ``last`` at the end; returns name -> path.

        Raises:
            ResultSetError: a file could not be moved in (named).
        """
        if last not in self._written:
            raise ValueError(f"the completing file {last!r} was not written")
        if not self.overwrite:
            self._refuse_existing()  # nothing can have appeared under the lock, but be sure
        order = [name for name in self._written if name != last] + [last]
        stale = [p for p in self.existing() if p.name not in order]
        with _interrupts_held_back():
            (self.folder / last).unlink(missing_ok=True)  # an earlier set's mark goes first
            for name in order:
                try:
                    os.replace(self.staging / name, self.folder / name)
                except OSError as exc:
                    raise ResultSetError(f"could not move {self.folder / name} into place: {_reason(exc)}") from exc
            for path in stale:
                path.unlink(missing_ok=True)
        if stale:
            logger.info("removed earlier results not in the new set: %s", ", ".join(p.name for p in stale))
        return {name: self.folder / name for name in order}

    def _refuse_existing(self) -> None:
        found = self.existing()
        if found and not self.overwrite:
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            raise ResultsExistError(
                f"{found[0]} already exists{more}; earlier results are kept: pass --overwrite "
                "(overwrite=True) to replace them, or choose another output folder"
            )

    def _remove_leftover_staging(self) -> None:
        """Staging folders of runs that ended without cleaning up (we hold the lock: none is active)."""
        for path in self.folder.glob(f"{_STAGING_PREFIX}*"):
            if path.is_dir():
                logger.warning("removing %s, left by an interrupted run", path)
                shutil.rmtree(path, ignore_errors=True)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


@contextmanager
def _interrupts_held_back() -> Iterator[None]:
    """Hold SIGINT back meanwhile (main thread only) and raise it afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt
