"""Label maps of real heads: reading, structure targets, and the tissue/brain reductions."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg import write_volume
from napari_medseg.training.label_maps import (
    BRAIN_OF_STRUCTURE,
    STRUCTURE_IDS,
    STRUCTURES,
    TISSUE_NAMES,
    TISSUE_OF_STRUCTURE,
    load_label_map,
    load_label_maps,
)
from napari_medseg.types import Geometry, Volume


def _write_map(path, array, spacing=(1.0, 1.0, 1.0)):
    like = Volume(np.zeros(array.shape, np.float32), Geometry(spacing, (0.0, 0.0, 0.0)))
    write_volume(path, array.astype(np.int16), like)
    return path


def test_tables_are_consistent():
    assert len(STRUCTURES) == 33 and STRUCTURE_IDS[0] == 0 and len(set(STRUCTURE_IDS)) == 33
    assert TISSUE_OF_STRUCTURE.max() == len(TISSUE_NAMES) - 1
    # every left structure has its right twin with the same tissue
    names = [s[1] for s in STRUCTURES]
    for i, name in enumerate(names):
        if name.startswith("left "):
            j = names.index("right " + name[5:])
            assert TISSUE_OF_STRUCTURE[i] == TISSUE_OF_STRUCTURE[j]
    assert BRAIN_OF_STRUCTURE[0] == 0 and BRAIN_OF_STRUCTURE[1:].all()


def test_inner_extras_take_the_nearest_structure_and_outside_labels_are_background(tmp_path):
    array = np.zeros((12, 12, 12), np.int16)
    array[2:10, 2:10, 2:6] = 2  # left white matter
    array[2:10, 2:10, 6:10] = 17  # left hippocampus
    array[5, 5, 4] = 25  # a lesion inside the white matter
    array[5, 5, 7] = 30  # a vessel inside the hippocampus
    array[0, :, :] = 507  # extra-cerebral soft tissue
    array[11, 0, 0] = 999  # an unknown id far away
    label_map = load_label_map(_write_map(tmp_path / "m.nii.gz", array))
    index = {s[0]: i for i, s in enumerate(STRUCTURES)}
    # the map is reoriented; find voxels by their original value
    ids = np.asarray(label_map.label_ids)
    values = ids[label_map.generation]
    assert sorted(np.unique(values)) == sorted(np.unique(array))
    assert (values == 25).sum() == 1 and label_map.structures[values == 25][0] == index[2]
    assert label_map.structures[values == 30][0] == index[17]
    assert (label_map.structures[values == 507] == 0).all()
    assert label_map.structures[values == 999][0] == 0


def test_bad_maps_are_refused(tmp_path):
    with pytest.raises(ValueError, match="spacing"):
        load_label_map(_write_map(tmp_path / "coarse.nii.gz", np.zeros((4, 4, 4)), spacing=(2.0, 2.0, 2.0)))
    with pytest.raises(ValueError, match="no label maps"):
        load_label_maps(tmp_path / "empty" if (tmp_path / "empty").mkdir() is None else tmp_path)


def test_a_real_map_reads_in_the_canonical_orientation(shared_data):
    path = shared_data / "synthseg-label-maps" / "training_seg_01.nii.gz"
    label_map = load_label_map(path)
    assert label_map.generation.shape == (256, 256, 256)
    brain = BRAIN_OF_STRUCTURE[label_map.structures] > 0
    assert 1000 < brain.sum() / 1000 < 2500  # mL: an adult brain with its CSF
    # RAS canonical storage: index axes point to superior, anterior and right, so the
    # left hemisphere's structures lie at lower x than the right's
    index = {s[0]: i for i, s in enumerate(STRUCTURES)}
    left_x = np.nonzero(label_map.structures == index[3])[2].mean()
    right_x = np.nonzero(label_map.structures == index[42])[2].mean()
    assert left_x < right_x
    # the cerebellum lies below (lower z than) the thalamus
    assert np.nonzero(label_map.structures == index[8])[0].mean() < np.nonzero(label_map.structures == index[10])[0].mean()


def test_class_volume_ranges_span_the_maps(tmp_path):
    from napari_medseg.training.label_maps import class_volume_ranges

    small = np.zeros((10, 10, 10), np.int16)
    small[2:4, 2:4, 2:4] = 17  # 8 voxels of left hippocampus: 0.008 mL
    large = small.copy()
    large[5:9, 5:9, 5:9] = 17  # 64 more
    maps = [load_label_map(_write_map(tmp_path / f"{n}.nii.gz", a)) for n, a in (("s", small), ("l", large))]
    ranges = class_volume_ranges(maps, "structures")
    assert ranges["left hippocampus"] == [0.01, 0.07]
    assert class_volume_ranges(maps, "tissue")["grey matter"] == [0.01, 0.07]
    assert "background" not in ranges
    with pytest.raises(ValueError, match="target"):
        class_volume_ranges(maps, "brain")
