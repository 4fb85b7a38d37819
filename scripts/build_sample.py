"""Build the shipped sample volume ``resources/sample/mni152_t1.nii.gz``.

Source: the symmetric MNI ICBM152 2009a T1 template inside the nilearn wheel
(brain-extracted, 1 mm, uint8). The volume is cropped to the head's bounding box plus a
margin so that the package stays small; spacing, direction and the physical position
of every voxel are kept (the origin moves with the crop).

    python scripts/build_sample.py
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from napari_medseg.io import read_volume, write_volume
from napari_medseg.types import Geometry, Volume
from nilearn_template import fetch_template

MARGIN = 4
OUTPUT = Path(__file__).resolve().parents[1] / "resources" / "sample" / "mni152_t1.nii.gz"


def crop_to_foreground(volume: Volume, margin: int) -> Volume:
    """Crop to the bounding box of non-zero voxels, keeping physical positions."""
    nonzero = np.argwhere(volume.array > 0)
    start = np.maximum(nonzero.min(axis=0) - margin, 0)
    stop = np.minimum(nonzero.max(axis=0) + margin + 1, volume.shape)
    array = volume.array[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]].copy()
    origin = volume.geometry.index_to_physical(start)[0]
    geometry = Geometry(volume.geometry.spacing, tuple(origin), volume.geometry.direction)
    return Volume(array=array, geometry=geometry, modality="MR", meta={})


def main() -> None:
    files = fetch_template()
    template = read_volume(files["t1"])
    sample = crop_to_foreground(template, MARGIN)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    write_volume(OUTPUT, sample.array.astype(np.uint8), sample)  # uint8 kept as is
    print(f"wrote {OUTPUT} {sample.shape} from {files['t1'].name}")


if __name__ == "__main__":
    main()
