"""argmax_labels is numpy's argmax over the classes, whatever the storage order."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.preprocess import argmax_labels, classes_last


def _probabilities(shape=(7, 5, 6), k=5, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.random((*shape, k)).astype(np.float32)
    p[0] = 1.0 / k  # every class tied: the first wins
    p[1, ..., 2] = p[1, ..., 3] = 2.0  # a tie between two later classes
    p[2, :, :, -1] = 3.0  # the last class
    return p


@pytest.mark.parametrize("slab", [1, 3, 16])
def test_equals_numpy_argmax_channels_last_and_class_major(slab, tmp_path):
    p = _probabilities()
    expected = np.argmax(p, axis=-1).astype(np.uint8)
    assert np.array_equal(argmax_labels(p, slab=slab), expected)
    major = classes_last(np.ascontiguousarray(np.moveaxis(p, -1, 0)))
    assert np.array_equal(argmax_labels(major, slab=slab), expected)
    disk = classes_last(np.memmap(tmp_path / "p.f32", dtype=np.float32, mode="w+", shape=(p.shape[-1], *p.shape[:3])))
    disk[...] = p
    labels = argmax_labels(disk, slab=slab)
    assert labels.dtype == np.uint8 and np.array_equal(labels, expected)
    assert set(np.unique(labels[0])) == {0} and set(np.unique(labels[1])) == {2} and set(np.unique(labels[2])) == {4}
