"""Tests of the training layer; helpers for a toy fine-tuning problem live here.

The toy volume (8 x 32 x 32, 1 mm, identity direction, so the tiny models' RAS grid
flips y and x) has air around a box whose left half is dark ("CSF", class 1) and right
half bright ("white matter", class 3). Strokes on two slices mark each class, background
painted as value 1.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medseg.types import Geometry, Volume

SHAPE = (8, 32, 32)


@pytest.fixture
def single_thread():
    """One torch thread for the test (restored after): on this shared 2-core machine two
    threads spin-wait for each other and tiny models run up to 100x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def toy_volume(seed: int = 0, shape=SHAPE) -> tuple[Volume, np.ndarray]:
    """The toy image and its dense reference classes (z, y, x) int64 (0, 1 or 3)."""
    rng = np.random.default_rng(seed)
    z, y, x = shape
    truth = np.zeros(shape, dtype=np.int64)
    truth[:, 4 : y - 4, 4 : x // 2] = 1
    truth[:, 4 : y - 4, x // 2 : x - 4] = 3
    intensity = np.array([0.05, 0.35, 0.0, 1.0], dtype=np.float32)[truth]
    image = (intensity + 0.03 * rng.standard_normal(shape)).clip(0, None).astype(np.float32) * 100
    return Volume(image, Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0)), modality="MR"), truth


def strokes(truth: np.ndarray, slices=(2, 5), every: int = 3) -> np.ndarray:
    """Sparse labels: on ``slices``, every ``every``-th row of the reference (value k + 1)."""
    sparse = np.zeros(truth.shape, dtype=np.uint8)
    for z in slices:
        sparse[z, ::every] = truth[z, ::every] + 1
    return sparse
