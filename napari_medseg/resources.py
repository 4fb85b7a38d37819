"""Where the shipped resources (models, sample volume) live.

In a wheel, ``resources/`` is installed inside the package; in a source checkout it sits
beside the package at the repository's top level.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def resources_dir() -> Path:
    """The folder holding ``models/`` and ``sample/``."""
    for candidate in (_PACKAGE_DIR / "resources", _PACKAGE_DIR.parent / "resources"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"napari-medseg resources not found beside {_PACKAGE_DIR}")


def sample_volume_path() -> Path:
    """The shipped sample brain T1 (MNI ICBM152 2009a, see its NOTICE)."""
    path = resources_dir() / "sample" / "mni152_t1.nii.gz"
    if not path.is_file():
        raise FileNotFoundError(f"sample volume missing: {path}")
    return path


def brain_atlas_path() -> Path:
    """The shipped MNI brain mask used as a registration prior (see its NOTICE)."""
    path = resources_dir() / "atlas" / "mni152_brain_mask.nii.gz"
    if not path.is_file():
        raise FileNotFoundError(f"brain atlas missing: {path}")
    return path
