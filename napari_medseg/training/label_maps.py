"""Whole-head label maps of real subjects: the training data of the shipped brain models.

The maps are FreeSurfer-labelled heads (``aseg`` structure ids plus SynthSeg's
extra-cerebral generation labels 502-530), 1 mm, any orientation; they are read with the
project's reader and reoriented exactly (no interpolation) to the models' canonical
orientation. Each map gives two uint8 arrays on one (z, y, x) grid:

- ``generation``: one index per distinct label value of the map (brain structures, the
  unsegmented extras such as lesions or vessels, every extra-cerebral label): what the
  synthesiser gives its own random intensity;
- ``structures``: the training target, an index into :data:`STRUCTURES` (0 = background).
  Small unsegmented labels inside the brain (white-matter lesions, vessels, the fifth
  ventricle, ...) take the nearest segmented structure, as SynthSeg's training does; every
  label outside the brain is background.

:data:`TISSUE_OF_STRUCTURE` and :data:`BRAIN_OF_STRUCTURE` reduce the structure target to
the tissue classes (background, CSF, grey matter, white matter) and to brain/non-brain.
Sources and licence: ``data/synthseg-label-maps/README.md``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..io import read_volume
from ..preprocess.orientation import reorient

logger = logging.getLogger(__name__)

#: SynthSeg's 32 structures plus background, in output order: (FreeSurfer id, name, tissue,
#: colour of FreeSurfer's FreeSurferColorLUT). Tissue: 0 background, 1 CSF, 2 grey matter,
#: 3 white matter (subcortical nuclei, hippocampus and amygdala count as grey matter; the
#: brain stem and ventral diencephalon as white matter).
STRUCTURES: tuple[tuple[int, str, int, str], ...] = (
    (0, "background", 0, "#00000000"),
    (2, "left cerebral white matter", 3, "#f5f5f5ff"),
    (3, "left cerebral cortex", 2, "#cd3e4eff"),
    (4, "left lateral ventricle", 1, "#781286ff"),
    (5, "left inferior lateral ventricle", 1, "#c43afaff"),
    (7, "left cerebellum white matter", 3, "#dcf8a4ff"),
    (8, "left cerebellum cortex", 2, "#e69422ff"),
    (10, "left thalamus", 2, "#00760eff"),
    (11, "left caudate", 2, "#7abadcff"),
    (12, "left putamen", 2, "#ec0db0ff"),
    (13, "left pallidum", 2, "#0c30ffff"),
    (14, "3rd ventricle", 1, "#cccc8eff"),
    (15, "4th ventricle", 1, "#2acca4ff"),
    (16, "brain stem", 3, "#779fb0ff"),
    (17, "left hippocampus", 2, "#dcd814ff"),
    (18, "left amygdala", 2, "#67ffffff"),
    (24, "CSF", 1, "#3c3c3cff"),
    (26, "left accumbens area", 2, "#ffa500ff"),
    (28, "left ventral DC", 3, "#a52a2aff"),
    (41, "right cerebral white matter", 3, "#f5f5f5ff"),
    (42, "right cerebral cortex", 2, "#cd3e4eff"),
    (43, "right lateral ventricle", 1, "#781286ff"),
    (44, "right inferior lateral ventricle", 1, "#c43afaff"),
    (46, "right cerebellum white matter", 3, "#dcf8a4ff"),
    (47, "right cerebellum cortex", 2, "#e69422ff"),
    (49, "right thalamus", 2, "#00760eff"),
    (50, "right caudate", 2, "#7abadcff"),
    (51, "right putamen", 2, "#ec0db0ff"),
    (52, "right pallidum", 2, "#0c30ffff"),
    (53, "right hippocampus", 2, "#dcd814ff"),
    (54, "right amygdala", 2, "#67ffffff"),
    (58, "right accumbens area", 2, "#ffa500ff"),
    (60, "right ventral DC", 3, "#a52a2aff"),
)
STRUCTURE_IDS = tuple(s[0] for s in STRUCTURES)
TISSUE_NAMES = ("background", "CSF", "grey matter", "white matter")
TISSUE_COLORS = ("#00000000", "#3c8cf0ff", "#f0a03cff", "#f0f0c8ff")
TISSUE_OF_STRUCTURE = np.array([s[2] for s in STRUCTURES], dtype=np.uint8)
BRAIN_OF_STRUCTURE = (TISSUE_OF_STRUCTURE > 0).astype(np.uint8)

#: Which structures share one Gaussian in a per-scan intensity mixture (the post-processing's
#: ``class_groups``), by FreeSurfer id: 1 CSF-like (ventricles, CSF), 2 grey-matter-like
#: (cortices, caudate, hippocampus, amygdala, accumbens), 3 white-matter-like (cerebral and
#: cerebellar white matter, brain stem, ventral DC), then thalamus, putamen and pallidum
#: each their own, since on T1 their intensities lie between grey and white matter. The
#: structures within a group are told apart by the network alone.
_INTENSITY_GROUPS = {
    1: (4, 5, 14, 15, 24, 43, 44),
    2: (3, 8, 11, 17, 18, 26, 42, 47, 50, 53, 54, 58),
    3: (2, 7, 16, 28, 41, 46, 60),
    4: (10, 49),
    5: (12, 51),
    6: (13, 52),
}
INTENSITY_GROUP_OF_STRUCTURE = np.array(
    [next((g for g, ids in _INTENSITY_GROUPS.items() if s[0] in ids), 0) for s in STRUCTURES], dtype=np.uint8
)

#: Labels that lie inside the brain but are not segmented (white-matter lesions 25/57,
#: vessels 30/62, fifth ventricle 72, and small periventricular labels 136/137/163/164):
#: their target is the nearest segmented structure. Any other unknown id is background.
INNER_EXTRAS = (25, 30, 57, 62, 72, 136, 137, 163, 164)
#: Relative T1 brightness of each structure id, 0 = CSF, 1 = cortex, 2 = white matter:
#: the prior of the T1-like contrasts the synthesiser draws (ids not listed are random).
T1_LEVEL = {
    2: 2.0, 41: 2.0, 7: 1.9, 46: 1.9, 16: 1.75, 28: 1.65, 60: 1.65,
    3: 1.0, 42: 1.0, 8: 1.05, 47: 1.05, 17: 0.95, 53: 0.95, 18: 1.0, 54: 1.0,
    10: 1.5, 49: 1.5, 11: 1.15, 50: 1.15, 12: 1.25, 51: 1.25, 13: 1.7, 52: 1.7, 26: 1.15, 58: 1.15,
    4: 0.0, 43: 0.0, 5: 0.05, 44: 0.05, 14: 0.0, 15: 0.0, 24: 0.0, 72: 0.0,
    25: 1.2, 57: 1.2, 136: 0.6, 137: 0.6, 163: 0.6, 164: 0.6,
}
MAX_GENERATION_LABELS = 256


@dataclass(frozen=True)
class LabelMap:
    """One head: ``generation`` and ``structures`` (z, y, x) uint8 on a 1 mm grid, and the
    FreeSurfer id of each generation index (``label_ids[g]``)."""

    generation: np.ndarray
    structures: np.ndarray
    label_ids: tuple[int, ...]
    name: str


def structure_lookup() -> np.ndarray:
    """(max id + 1,) uint8 table: FreeSurfer id -> structure index (255 for others)."""
    table = np.full(max(STRUCTURE_IDS) + 1, 255, np.uint8)
    for index, label in enumerate(STRUCTURE_IDS):
        table[label] = index
    return table


def load_label_map(path: str | Path, orientation: str = "RAS") -> LabelMap:
    """Read one label map, reoriented exactly to ``orientation``.

    Raises:
        ValueError: the spacing is not 1 mm, the values are not integers, or the map has more
            than :data:`MAX_GENERATION_LABELS` distinct labels.
    """
    volume = read_volume(path)
    if not np.allclose(volume.spacing, 1.0, atol=1e-3):
        raise ValueError(f"label map {path}: spacing {volume.spacing} must be 1 mm")
    canonical, _ = reorient(volume, orientation)
    values = np.asarray(canonical.array)
    labels = np.rint(values).astype(np.int32)
    if not np.array_equal(labels, values):
        raise ValueError(f"label map {path}: values are not integers")
    ids, generation = np.unique(labels, return_inverse=True)
    if len(ids) > MAX_GENERATION_LABELS:
        raise ValueError(f"label map {path}: {len(ids)} distinct labels, at most {MAX_GENERATION_LABELS}")
    structures = _structure_target(labels)
    return LabelMap(
        generation=generation.reshape(labels.shape).astype(np.uint8),
        structures=structures,
        label_ids=tuple(int(i) for i in ids),
        name=Path(path).name,
    )


def load_label_maps(folder: str | Path, orientation: str = "RAS") -> list[LabelMap]:
    """Every ``*.nii.gz`` / ``*.nii`` map in ``folder``, sorted by name.

    Raises:
        ValueError: the folder holds no label map.
    """
    paths = sorted(p for p in Path(folder).iterdir() if p.name.endswith((".nii.gz", ".nii")))
    if not paths:
        raise ValueError(f"no label maps (*.nii.gz) in {folder}")
    maps = [load_label_map(p, orientation) for p in paths]
    logger.info("read %d label maps from %s", len(maps), folder)
    return maps


def _structure_target(labels: np.ndarray) -> np.ndarray:
    """(z, y, x) uint8 structure indices; inner extras take the nearest structure."""
    table = structure_lookup()
    inside = labels <= table.shape[0] - 1
    target = np.full(labels.shape, 255, np.uint8)
    target[inside] = table[labels[inside]]
    inner = np.isin(labels, INNER_EXTRAS)
    target[(target == 255) & ~inner] = 0
    if inner.any():
        # Distance transform over the bounding box of the extras only (fast, bounded memory).
        box = tuple(slice(max(0, a.min() - 8), b.max() + 9) for a, b in zip(np.nonzero(inner), np.nonzero(inner)))
        sub = target[box]
        _, nearest = ndimage.distance_transform_edt(sub == 255, return_indices=True)
        sub[...] = sub[tuple(nearest)]
    return target


def class_volume_ranges(maps: list[LabelMap], target: str) -> dict[str, list[float]]:
    """Smallest and largest volume (mL) of each class over ``maps``: the range of real
    adult anatomy a model trained on them has seen. ``target``: "tissue" or "structures".

    Raises:
        ValueError: an unknown target, or no maps.
    """
    if target not in ("tissue", "structures") or not maps:
        raise ValueError(f"target {target!r} must be 'tissue' or 'structures', with at least one map")
    table = TISSUE_OF_STRUCTURE if target == "tissue" else np.arange(len(STRUCTURES))
    names = TISSUE_NAMES if target == "tissue" else tuple(s[1] for s in STRUCTURES)
    volumes = np.array(
        [np.bincount(table[m.structures.ravel()], minlength=len(names))[: len(names)] / 1000.0 for m in maps]
    )
    return {name: [round(float(volumes[:, k].min()), 2), round(float(volumes[:, k].max()), 2)]
            for k, name in enumerate(names) if k > 0}  # fmt: skip
