"""Small text files and whole folders written whole or not at all."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["new_folder_atomic", "write_text_atomic"]


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder and
    ``os.replace``: a reader sees the old file or the new one, never a part of it.

    Raises:
        OSError: the folder is missing or not writable (the temporary file is removed).
    """
    path = Path(path)
    temporary = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.part"
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


@contextmanager
def new_folder_atomic(path: str | os.PathLike, what: str = "folder") -> Iterator[Path]:
    """Yield an empty temporary sibling of ``path`` to fill; renamed to ``path`` when the
    block ends, removed when it raises. A folder that appeared at ``path`` meanwhile is
    never replaced.

    Raises:
        FileExistsError: ``path`` appeared while the folder was written (``what`` names it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    temporary.mkdir()
    try:
        yield temporary
        if path.exists():
            raise FileExistsError(f"{what} {path} appeared while saving; not overwritten")
        os.rename(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
