"""How often each case was started in a run, so that a case that kills its worker stops.

A case whose worker process dies while running it (killed, a crash in native code, out of
memory) raises nothing: Dask only sees the worker go and runs the case again on another
worker, and its ``retries`` (which count exceptions) never apply. Each start of a case is
therefore written down before the case runs, in ``OUTDIR/.medseg-attempts/<case id>.json``
(the cohort folder is shared by the workers, as the outputs are), with the run it belongs
to and, when the try raised, its error. A start that finds the case's tries used up raises
:class:`WorkerDied` naming each earlier try and how it ended, so the case is recorded as
failed and the cohort goes on.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ATTEMPTS_FOLDER", "CaseAttempts", "WorkerDied"]

ATTEMPTS_FOLDER = ".medseg-attempts"


class WorkerDied(RuntimeError):
    """A case whose tries are used up, at least one of them ended by its worker process dying."""


@dataclass(frozen=True)
class CaseAttempts:
    """The start records of one run (small and picklable: sent with every case).

    Attributes:
        folder: ``OUTDIR/.medseg-attempts``.
        run: this run's token (records of another run are started afresh).
        tries: starts allowed per case (``retries + 1``).
    """

    folder: str
    run: str
    tries: int

    def start(self, case_id: str, worker: str) -> None:
        """Record a start of ``case_id`` on ``worker`` (runs in the worker, before the case).

        Raises:
            WorkerDied: the case was started ``tries`` times already in this run and the
                tries did not all end in errors (those Dask retries itself).
        """
        starts = self._starts(case_id)
        if len(starts) >= self.tries:
            raise WorkerDied(_summary(case_id, starts))
        starts.append({"worker": worker, "pid": os.getpid(), "host": socket.gethostname(), "started": _now()})
        self._write(case_id, starts)

    def finish(self, case_id: str, error: BaseException) -> None:
        """Record that the latest start of ``case_id`` ended with ``error``."""
        starts = self._starts(case_id)
        if starts:
            starts[-1]["error"] = f"{type(error).__name__}: {error}"
            self._write(case_id, starts)

    def clear(self, case_id: str) -> None:
        """Forget ``case_id``'s starts (it finished)."""
        self._path(case_id).unlink(missing_ok=True)

    def _path(self, case_id: str) -> Path:
        return Path(self.folder) / f"{case_id}.json"

    def _starts(self, case_id: str) -> list[dict[str, Any]]:
        try:
            record = json.loads(self._path(case_id).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        ok = isinstance(record, dict) and record.get("run") == self.run and isinstance(record.get("starts"), list)
        return record["starts"] if ok else []

    def _write(self, case_id: str, starts: list[dict[str, Any]]) -> None:
        from .table import write_atomically

        Path(self.folder).mkdir(parents=True, exist_ok=True)
        text = json.dumps({"run": self.run, "case_id": case_id, "starts": starts}, indent=1)
        write_atomically(self._path(case_id), lambda path: Path(path).write_text(text, encoding="utf-8"))


def _summary(case_id: str, starts: list[dict[str, Any]]) -> str:
    """E.g. ``case x was tried 2 times: its worker process died during both (killed, ...): pid 12 ...``."""
    died = [s for s in starts if "error" not in s]
    where = "; ".join(
        f"pid {s.get('pid')} on {s.get('host')} ({s.get('worker')}): " + (s["error"] if "error" in s else "died")
        for s in starts
    )
    return (
        f"case {case_id} was tried {len(starts)} times and its worker process died during {len(died)} of them "
        f"(killed, crashed, or out of memory): {where}"
    )


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
