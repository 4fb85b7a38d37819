"""Build the shipped brain-mask atlas ``resources/atlas/mni152_brain_mask.nii.gz``.

Source: the symmetric MNI ICBM152 2009a T1 template inside the nilearn wheel, which is
brain-extracted: its non-zero voxels are the template's brain (cerebrum, cerebellum and
brainstem down to the medulla). The mask is stored as uint8 (1 = brain) at 1 mm, cropped
to its bounding box plus a margin, every voxel at its physical position.

Used at inference time by :mod:`napari_medseg.postprocess.atlas`: registered to a
whole-head scan, it tells the network's face and neck false positives from the brain.

    python scripts/build_atlas.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from build_sample import crop_to_foreground
from napari_medseg.io import read_volume, write_volume
from napari_medseg.types import Volume
from nilearn_template import fetch_template

MARGIN = 4
OUTPUT = Path(__file__).resolve().parents[1] / "resources" / "atlas" / "mni152_brain_mask.nii.gz"


def main() -> None:
    files = fetch_template()
    template = read_volume(files["t1"])
    mask = Volume(array=(template.array > 0).astype(np.uint8), geometry=template.geometry, modality="MR", meta={})
    cropped = crop_to_foreground(mask, MARGIN)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    write_volume(OUTPUT, cropped.array, cropped)
    print(f"wrote {OUTPUT} {cropped.shape}, {int(cropped.array.sum())} brain voxels")


if __name__ == "__main__":
    main()
