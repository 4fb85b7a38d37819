"""Where a viewer's corrections are kept safe between sessions (no Qt).

Corrections of an image are written to ``<user data>/autosave/<key>_corrections.nii.gz``
with the image's geometry, the key being a hash of the image's source path, shape and
grid, so that opening the same scan again finds them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..types import Volume


def autosave_dir() -> Path:
    from ..models.catalog import user_data_dir

    return user_data_dir() / "autosave"


def image_key(volume: Volume, source: str = "") -> str:
    """Stable id of an image: source path + shape + spacing/origin/direction."""
    text = repr((source or volume.meta.get("source", ""), volume.shape, volume.geometry.spacing,
                 volume.geometry.origin, volume.geometry.direction))  # fmt: skip
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def corrections_path(volume: Volume, source: str = "") -> Path:
    return autosave_dir() / f"{image_key(volume, source)}_corrections.nii.gz"


def save_corrections(labels: np.ndarray, volume: Volume, source: str = "") -> Path:
    """Write the corrections atomically beside the other autosaves."""
    from ..io import write_volume

    path = corrections_path(volume, source)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_volume(path, labels, volume, kind="labels")


def load_corrections(volume: Volume, source: str = "") -> np.ndarray | None:
    """The autosaved corrections of this image, or None."""
    from ..io import read_volume

    path = corrections_path(volume, source)
    if not path.is_file():
        return None
    saved = read_volume(path)
    return saved.array if saved.shape == volume.shape else None
