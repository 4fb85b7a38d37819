"""The training atlas of the default brain-tissue model.

One grid (the whole-head label map's, 1 mm, RAS storage: array axes point to superior,
anterior and right) holding everything the synthesiser samples from:

- ``t1``: the MNI ICBM152 2009a T1 template (brain-extracted), scaled to [0, 1];
  zero outside the template and below it (the neck).
- ``template_mask``: 1 where the template has brain (T1 > 0).
- ``pve``: partial volumes of CSF, GM and WM (3, Z, Y, X) in [0, 1]. GM and WM come from
  the template's probability maps; CSF inside the template mask is 1 - GM - WM; CSF
  outside it is the whole-head map's CSF label (the subarachnoid space the brain
  extraction removed).
- ``head``: whole-head labels (0 outside, 1 WM, 2 GM, 3 CSF, 4 bone, 5 soft tissue,
  6 air) that say what surrounds the brain: skull, scalp, face, neck.
- ``target``: training labels 0 background, 1 CSF, 2 GM, 3 WM (arg-max of
  background = 1 - CSF - GM - WM and the partial volumes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..io import read_volume

# The template's 189 slices start at the whole-head map's slice 121 (z = -72 mm).
TEMPLATE_Z_OFFSET = 121
HEAD_LABEL_CSF = 3
OUTER_CSF_MM = 4


@dataclass
class BrainAtlas:
    t1: np.ndarray
    template_mask: np.ndarray
    pve: np.ndarray
    head: np.ndarray
    target: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.head.shape


def build_atlas(t1_path: Path, gm_path: Path, wm_path: Path, head_labels_path: Path) -> BrainAtlas:
    """Assemble the atlas; checks that the template and head grids coincide."""
    template = read_volume(t1_path)
    gm = read_volume(gm_path)
    wm = read_volume(wm_path)
    head = read_volume(head_labels_path)
    expected_origin = head.geometry.index_to_physical([TEMPLATE_Z_OFFSET, 0, 0])[0]
    if not np.allclose(template.geometry.origin, expected_origin, atol=1e-3):
        raise ValueError(
            f"template origin {template.geometry.origin} does not sit at head slice {TEMPLATE_Z_OFFSET} "
            f"({tuple(expected_origin)})"
        )
    if template.shape[1:] != head.shape[1:] or gm.shape != template.shape or wm.shape != template.shape:
        raise ValueError(f"grids differ: template {template.shape}, GM {gm.shape}, WM {wm.shape}, head {head.shape}")

    shape = head.shape
    z0, z1 = TEMPLATE_Z_OFFSET, TEMPLATE_Z_OFFSET + template.shape[0]
    t1 = np.zeros(shape, np.float32)
    t1[z0:z1] = template.array.astype(np.float32) / float(template.array.max())
    template_mask = t1 > 0
    pve = np.zeros((3,) + shape, np.float32)
    pve[1, z0:z1] = gm.array.astype(np.float32) / float(gm.array.max())
    pve[2, z0:z1] = wm.array.astype(np.float32) / float(wm.array.max())
    pve[1:] *= template_mask
    tissue = pve[1] + pve[2]
    over = tissue > 1
    pve[1:, over] /= tissue[over]
    pve[0] = np.where(template_mask, 1.0 - pve[1] - pve[2], 0.0)
    # Only the CSF hugging the brain counts as brain CSF; the spinal canal stays background.
    near_brain = ndimage.binary_dilation(template_mask, ndimage.generate_binary_structure(3, 1), OUTER_CSF_MM)
    outer_csf = (head.array == HEAD_LABEL_CSF) & ~template_mask & near_brain
    pve[0, outer_csf] = 1.0

    background = 1.0 - pve.sum(axis=0)
    target = np.argmax(np.concatenate([background[None], pve]), axis=0).astype(np.uint8)
    return BrainAtlas(
        t1=t1,
        template_mask=template_mask.astype(np.float32),
        pve=pve,
        head=head.array.astype(np.uint8),
        target=target,
    )
