"""Where a cohort stands: counts, rate and time left (the CLI and the viewer show it)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CohortProgress"]


@dataclass(frozen=True)
class CohortProgress:
    """A snapshot, passed to a cohort's ``progress`` callback after each case.

    Attributes:
        total: cases in the cohort.
        resumed: cases finished by an earlier run (skipped now).
        done: cases finished by this run.
        failed: cases that failed after their retries.
        elapsed_s: seconds since this run started submitting cases.
        dashboard: the Dask dashboard's address ("" when there is none).
    """

    total: int
    resumed: int
    done: int
    failed: int
    elapsed_s: float
    dashboard: str = ""

    @property
    def finished(self) -> int:
        """Cases with an outcome (resumed, done or failed)."""
        return self.resumed + self.done + self.failed

    @property
    def rate_per_minute(self) -> float:
        """Cases this run completed (done or failed) per minute."""
        return 60.0 * (self.done + self.failed) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate; None before the first case."""
        rate = self.rate_per_minute
        return 60.0 * (self.total - self.finished) / rate if rate > 0 else None

    def line(self) -> str:
        """One line for a terminal, e.g. ``12/100 cases (3 resumed), 1 failed, 4.2 cases/min, ETA 21m00s``."""
        eta = self.eta_s
        text = f"{self.finished}/{self.total} cases"
        if self.resumed:
            text += f" ({self.resumed} resumed)"
        text += f", {self.failed} failed, {self.rate_per_minute:.1f} cases/min"
        if eta is not None and self.finished < self.total:
            text += f", ETA {_duration(eta)}"
        return text


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
