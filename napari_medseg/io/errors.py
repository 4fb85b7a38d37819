"""Errors raised by the io layer; each names the file and the problem.

They pickle with their fields (``__reduce__``), so an error met in a worker process (a
cohort on Dask, a process pool) reaches the caller as itself instead of breaking the pool.
"""

from __future__ import annotations

from pathlib import Path


class VolumeReadError(ValueError):
    """A file or folder could not be read as a volume."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):
        return type(self), (self.path, self.problem)


class VolumeWriteError(ValueError):
    """A volume could not be written."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):
        return type(self), (self.path, self.problem)
