"""run_segmentation streams the probabilities (the network's on the model grid, those on the
input grid) to files in the staging folder when they exceed the memory budget: the same
files come out, and the files go away."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.io import read_volume
from napari_medseg.export.run import probability_array, probability_budget, run_segmentation
from napari_medseg.types import Geometry, Volume
from tests.tiny_models import tiny_model


def _volume() -> Volume:
    rng = np.random.default_rng(0)
    array = np.full((12, 20, 18), -1000, np.int16)
    array[2:10, 4:16, 3:15] = rng.normal(40, 15, (8, 12, 12)).astype(np.int16)
    return Volume(array, Geometry((1.5, 0.8, 0.8), (0.0, 0.0, 0.0)), modality="CT")


def test_probabilities_over_the_budget_go_through_a_file_with_the_same_results(tmp_path):
    volume, model = _volume(), tiny_model(0)
    in_memory = run_segmentation(volume, model, tmp_path / "memory", "case", device="cpu", memory_budget=1 << 40)
    on_disk = run_segmentation(volume, model, tmp_path / "disk", "case", device="cpu", memory_budget=0)
    for key in ("seg", "prob"):
        expected, got = read_volume(in_memory[key]), read_volume(on_disk[key])
        np.testing.assert_array_equal(got.array, expected.array)
        assert got.geometry == expected.geometry == volume.geometry
    left = sorted(path.name for path in (tmp_path / "disk").iterdir())
    assert left == ["case_prob.nii.gz", "case_report.json", "case_seg.nii.gz"]  # no staging, lock or .f32


def test_probability_array_in_memory_or_on_disk(tmp_path):
    shape = (4, 5, 6, 3)
    small = probability_array(shape, 4 * 360, tmp_path)
    assert type(small) is np.ndarray and small.dtype == np.float32 and small.shape == shape
    big = probability_array(shape, 4 * 360 - 1, tmp_path)
    assert isinstance(big, np.memmap) and big.shape == shape and (tmp_path / "probabilities.f32").stat().st_size == 1440
    with pytest.raises(OSError, match=r"could not create .*missing.*probabilities\.f32 for the probabilities"):
        probability_array(shape, 0, tmp_path / "missing")


def test_the_default_budget_is_the_input_size_per_array():
    volume = _volume()
    assert 0 < probability_budget(volume) <= volume.array.nbytes
