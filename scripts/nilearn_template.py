"""Fetch the MNI ICBM152 2009a template files from the nilearn wheel (no other network).

The wheel is obtained with ``pip download`` from the package index and unpacked into a
cache folder; nilearn is never imported or installed.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

NILEARN_VERSION = "0.14.1"
TEMPLATE_FILES = {
    "t1": "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "nilearn/datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "nilearn/datasets/data/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
DEFAULT_CACHE = Path(__file__).resolve().parents[1] / "data-cache" / "mni152_2009a"


def fetch_template(cache: Path = DEFAULT_CACHE) -> dict[str, Path]:
    """Paths of the T1, GM and WM maps, downloading the nilearn wheel once."""
    cache.mkdir(parents=True, exist_ok=True)
    targets = {key: cache / Path(member).name for key, member in TEMPLATE_FILES.items()}
    if all(path.is_file() for path in targets.values()):
        return targets
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"nilearn=={NILEARN_VERSION}", "-d", tmp],
            check=True,
        )
        wheel = next(Path(tmp).glob("nilearn-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            for key, member in TEMPLATE_FILES.items():
                partial = targets[key].with_suffix(".part")
                partial.write_bytes(archive.read(member))
                partial.replace(targets[key])
    return targets
