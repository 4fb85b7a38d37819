"""A small terminal progress bar on stderr (no dependency)."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    """``bar(done, total)`` redraws; on a non-terminal stream it prints every 10%."""

    def __init__(self, label: str, stream=None, width: int = 30) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self.started = time.perf_counter()
        self._last_decile = -1
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def __call__(self, done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        elapsed = time.perf_counter() - self.started
        if self._tty:
            filled = int(self.width * fraction)
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(f"\r{self.label} [{bar}] {done}/{total} {elapsed:5.1f}s")
            if done >= total:
                self.stream.write("\n")
            self.stream.flush()
            return
        decile = int(fraction * 10)
        if decile != self._last_decile:
            self._last_decile = decile
            self.stream.write(f"{self.label}: {int(fraction * 100)}% ({done}/{total}, {elapsed:.1f}s)\n")
            self.stream.flush()
