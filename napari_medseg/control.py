"""Progress reporting and cancellation shared by long-running core functions (no torch)."""

from __future__ import annotations

from typing import Callable, Optional

ProgressCallback = Optional[Callable[[int, int], None]]
StopCheck = Optional[Callable[[], bool]]


class Cancelled(Exception):
    """Raised between batches when the caller's ``should_stop()`` returns True."""


def report(progress: ProgressCallback, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


def check_stop(should_stop: StopCheck) -> None:
    if should_stop is not None and should_stop():
        raise Cancelled("stopped on request")
