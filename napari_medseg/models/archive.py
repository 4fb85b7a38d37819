"""Unpacking a model archive (.zip) as hostile input: no absolute or ``..`` member paths, no
symbolic links, at most 4 GiB unpacked. Shared by this project's bundles and MONAI bundles."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

__all__ = ["MAX_ARCHIVE_BYTES", "unpack_archive"]

MAX_ARCHIVE_BYTES = 4 << 30  # refuse archives that unpack to more than 4 GiB


def unpack_archive(archive: Path, dest: Path, error: type[Exception]) -> None:
    """Check every member of ``archive``, then unpack it into ``dest``.

    Raises:
        error: ``error(archive, problem)`` for an unreadable archive, a member with an
            absolute or ``..`` path or a symbolic link (named), or one over the size limit.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as err:
        raise error(archive, f"not a readable zip archive: {err}") from None
    with zf:
        total = 0
        for info in zf.infolist():
            name = info.filename
            parts = PurePosixPath(name.replace("\\", "/")).parts
            if name.startswith(("/", "\\")) or PureWindowsPath(name).drive or ".." in parts:
                raise error(archive, f"archive member {name!r} has an absolute or '..' path")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise error(archive, f"archive member {name!r} is a symbolic link")
            total += info.file_size
            if total > MAX_ARCHIVE_BYTES:
                raise error(archive, f"archive unpacks to over {MAX_ARCHIVE_BYTES} bytes")
        try:
            zf.extractall(dest)
        except (zipfile.BadZipFile, OSError, RuntimeError) as err:
            raise error(archive, f"archive could not be unpacked: {err}") from None
