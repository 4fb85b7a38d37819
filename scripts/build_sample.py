"""Build the shipped sample volumes in ``resources/sample/``.

- ``adult_head_t1.nii.gz`` (the napari sample "Adult head T1" and the demo's input): the
  real adult head T1 of the project's shared data (``sample-head/t1.nii.gz``, from the
  repository niivue/niivue-brainchop, file ``public/t1_crop.nii.gz``, commit
  9513725b7c2cc363916668864f09f70dd7e4ddcb, MIT). The source file is checked against its
  SHA-256 before use.
- ``mni152_t1.nii.gz`` (the second sample, an average template): the symmetric MNI
  ICBM152 2009a T1 inside the nilearn wheel (brain-extracted, 1 mm, uint8).

Each volume is cropped to the bounding box of its non-zero voxels plus a margin so that
the package stays small; voxel values, spacing and direction are kept, and the origin
moves with the crop so that every voxel keeps its physical position. The head, stored in
FreeSurfer's LIA voxel order, is also reordered to RAS (an exact permutation and flip of
the voxel axes, every voxel at its physical position): napari's 2D views cannot invert a
layer transform that swaps displayed and sliced axes, and RAS is the order the models use.

    python scripts/build_sample.py [--only head|template] [--head PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

import numpy as np

from napari_medseg.io import read_volume, write_volume
from napari_medseg.preprocess.orientation import reorient
from napari_medseg.types import Geometry, Volume

MARGIN = 4
REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO / "resources" / "sample"
SHARED_DATA = Path(os.environ.get("MEDSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
HEAD_SOURCE = SHARED_DATA / "sample-head" / "t1.nii.gz"
# SHA-256 of public/t1_crop.nii.gz at niivue/niivue-brainchop commit 9513725b7c2c...
HEAD_SHA256 = "9f5708dd1980fe0017ad70f63d895bae66bd9f5487eb1c38d129591116113613"
OUTPUTS = {"head": SAMPLE_DIR / "adult_head_t1.nii.gz", "template": SAMPLE_DIR / "mni152_t1.nii.gz"}


def crop_to_foreground(volume: Volume, margin: int) -> Volume:
    """Crop to the bounding box of non-zero voxels (plus ``margin`` voxels), keeping
    physical positions: voxel ``i`` of the result is voxel ``i + start`` of ``volume``."""
    nonzero = np.argwhere(volume.array > 0)
    if nonzero.size == 0:
        raise ValueError(f"volume of shape {volume.shape} has no non-zero voxel to crop to")
    start = np.maximum(nonzero.min(axis=0) - margin, 0)
    stop = np.minimum(nonzero.max(axis=0) + margin + 1, volume.shape)
    array = volume.array[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]].copy()
    origin = volume.geometry.index_to_physical(start)[0]
    geometry = Geometry(volume.geometry.spacing, tuple(float(o) for o in origin), volume.geometry.direction)
    return Volume(array=array, geometry=geometry, modality="MR", meta={})


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_head(source: Path) -> Volume:
    """The real adult head, checked against the published file's hash, then cropped."""
    if not source.is_file():
        raise SystemExit(f"sample head not found: {source} (set MEDSEG_SHARED_DATA or pass --head)")
    found = sha256(source)
    if found != HEAD_SHA256:
        raise SystemExit(f"{source} has SHA-256 {found}, expected {HEAD_SHA256} (t1_crop.nii.gz at the recorded commit)")
    head, _ = reorient(read_volume(source), "RAS")
    return crop_to_foreground(head, MARGIN)


def build_template() -> Volume:
    """The MNI ICBM152 2009a T1 from the nilearn wheel, cropped."""
    from nilearn_template import fetch_template

    return crop_to_foreground(read_volume(fetch_template()["t1"]), MARGIN)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(OUTPUTS), help="build one of the two samples")
    parser.add_argument("--head", type=Path, default=HEAD_SOURCE, help="the sample head's source file")
    args = parser.parse_args()
    builders = {"head": lambda: build_head(args.head), "template": build_template}
    for key in [args.only] if args.only else sorted(OUTPUTS):
        sample = builders[key]()
        OUTPUTS[key].parent.mkdir(parents=True, exist_ok=True)
        write_volume(OUTPUTS[key], sample.array.astype(np.uint8), sample)  # uint8 kept as is
        print(f"wrote {OUTPUTS[key].relative_to(REPO)} {sample.shape}")


if __name__ == "__main__":
    main()
