"""Errors raised by the io layer; each names the file and the problem."""

from __future__ import annotations

from pathlib import Path


class VolumeReadError(ValueError):
    """A file or folder could not be read as a volume."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class VolumeWriteError(ValueError):
    """A volume could not be written."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
