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


SAMPLE_FILES = {"adult_head_t1": "adult_head_t1.nii.gz", "mni152_template_t1": "mni152_t1.nii.gz"}
"""The shipped sample volumes by key (see ``resources/sample/NOTICE.md``): a real adult
head T1 (napari's "Adult head T1" and the demo's input) and the MNI ICBM152 2009a average
template (the bundles' out-of-distribution calibration augments it)."""
#: The shipped bundle that the panel, `medseg segment`, `medseg batch` and the demo use unless told otherwise.
DEFAULT_MODEL = "brain-tissue-unet"
HEAD_SAMPLE = "adult_head_t1"


def sample_volume_path(key: str = "mni152_template_t1") -> Path:
    """A shipped sample volume (1 mm, uint8): ``"adult_head_t1"`` (:data:`HEAD_SAMPLE`) or
    ``"mni152_template_t1"``, the default, which the OOD calibration scripts mean when they
    say "the sample volume"."""
    if key not in SAMPLE_FILES:
        raise KeyError(f"unknown sample {key!r}; shipped samples: {', '.join(SAMPLE_FILES)}")
    path = resources_dir() / "sample" / SAMPLE_FILES[key]
    if not path.is_file():
        raise FileNotFoundError(f"sample volume missing: {path}")
    return path


def brain_atlas_path() -> Path:
    """The shipped MNI brain mask used as a registration prior (see its NOTICE)."""
    path = resources_dir() / "atlas" / "mni152_brain_mask.nii.gz"
    if not path.is_file():
        raise FileNotFoundError(f"brain atlas missing: {path}")
    return path
