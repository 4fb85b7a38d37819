"""segment's memory-lean path (post-processing in slabs, classes mapped back one at a
time into a given array, labels by slabs) gives the whole-volume path's results exactly."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from napari_medseg.inference import segment
from napari_medseg.inference.engine import predict_probabilities
from napari_medseg.inference.locator import find_brain
from napari_medseg.postprocess import PostprocessSettings, postprocess
from napari_medseg.preprocess import argmax_labels, prepare_for_model, restore
from napari_medseg.types import Geometry, Volume
from tests.tiny_models import tiny_model

SHIPPED_POSTPROCESS = {
    "brain_mask": {"closing_voxels": 3, "opening_mm": 5.0, "stripped_support_fraction": 0.6},
    "em_refine": {"iterations": 30, "prior_weight": 0.0},
}
MASK_ONLY = {"brain_mask": SHIPPED_POSTPROCESS["brain_mask"]}  # as a locator's brain: applied in place
PERMUTED = np.array([[0, 0, 1], [0, -1, 0], [1, 0, 0]], dtype=float)


def _ct(shape, spacing, seed=0) -> np.ndarray:
    """(z, y, x) int16 HU: air, an ellipsoid of noisy soft tissue in a shell of bone."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)], indexing="ij")
    semi = [0.45 * n * s for n, s in zip(shape, spacing)]
    r = np.sqrt(sum((g / a) ** 2 for g, a in zip(grids, semi)))
    array = np.full(shape, -1000, np.int16)
    array[r <= 1] = rng.normal(40, 15, int((r <= 1).sum())).astype(np.int16)
    array[(r <= 1) & (r > 0.85)] = 1000
    return array


def _whole_volume_segment(volume: Volume, model) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities as segment computed them before, whole arrays at each step."""
    config = model.config
    prepared = prepare_for_model(volume, config)
    with torch.inference_mode():
        probabilities = predict_probabilities(model, prepared.image, device=torch.device("cpu"), amp=None)
    brain, _ = find_brain(model, prepared.image, prepared.geometry, torch.device("cpu"))
    probabilities = postprocess(
        prepared.image, probabilities, PostprocessSettings.from_config(config), geometry=prepared.geometry,
        brain=brain,
    )  # fmt: skip
    restored = restore(probabilities, prepared)
    return np.argmax(restored, axis=-1).astype(np.uint8), restored


@pytest.mark.parametrize(
    "spacing, direction, postprocess_dict, margin",
    [
        pytest.param((1.6, 0.7, 0.7), None, SHIPPED_POSTPROCESS, 0, id="resampled-postprocessed"),
        pytest.param((1.0, 1.0, 1.0), PERMUTED, SHIPPED_POSTPROCESS, 0, id="permuted-postprocessed"),
        pytest.param((1.2, 0.8, 0.9), PERMUTED, None, 0, id="permuted-resampled-plain"),
        pytest.param((1.2, 0.8, 0.9), PERMUTED, SHIPPED_POSTPROCESS, 12, id="permuted-resampled-slice-margin"),
        pytest.param((1.0, 1.0, 1.0), PERMUTED, MASK_ONLY, 0, id="permuted-mask-only"),
        pytest.param((1.2, 0.8, 0.9), None, MASK_ONLY, 12, id="resampled-mask-only-slice-margin"),
    ],
)
def test_results_equal_the_whole_volume_path(spacing, direction, postprocess_dict, margin, tmp_path):
    model = tiny_model(0, postprocess=postprocess_dict, slice_margin_mm=margin)
    geometry = Geometry(spacing, (1.0, 2.0, 3.0)) if direction is None else Geometry(spacing, (1.0, 2.0, 3.0), direction)
    volume = Volume(_ct((20, 30, 28), spacing), geometry, modality="CT")
    labels, probabilities = _whole_volume_segment(volume, model)
    result = segment(volume, model, device="cpu", precision="fp32")
    np.testing.assert_array_equal(result.labels, labels)
    np.testing.assert_array_equal(result.probabilities, probabilities)

    def on_disk(shape):
        return np.memmap(tmp_path / "p.f32", dtype=np.float32, mode="w+", shape=shape)

    streamed = segment(volume, model, device="cpu", precision="fp32", allocate=on_disk)
    assert isinstance(streamed.probabilities, np.memmap)
    np.testing.assert_array_equal(streamed.labels, labels)
    np.testing.assert_array_equal(np.asarray(streamed.probabilities), probabilities)


def test_argmax_labels_by_slabs():
    probabilities = np.random.default_rng(1).random((7, 5, 6, 3)).astype(np.float32)
    labels = argmax_labels(probabilities, slab=2)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.argmax(probabilities, axis=-1))


def test_numpy_memory_beyond_the_input_stays_small():
    """Measured with tracemalloc (numpy's allocations; torch's are not traced) on an int16
    CT-like scan resampled to the model's 1 mm grid. The probabilities on the input grid
    (8 times an int16 input with 4 classes; on disk in run_segmentation when they do not
    fit) are not counted. The whole-volume path peaked at 12 times the input beyond them
    here (them a second time, an int64 argmax, float32 copies of the scan); measured now:
    5.3 (the model-grid image and probabilities, 0.39 of the input's voxels, and one class
    at a time on each grid)."""
    spacing = (0.8, 0.7, 0.7)
    model = tiny_model(0)
    volume = Volume(_ct((48, 64, 64), spacing), Geometry(spacing, (0.0, 0.0, 0.0)), modality="CT")
    store = {}

    def on_disk(shape):
        store["array"] = np.zeros(shape, np.float32)  # on disk in run_segmentation: not counted
        return store["array"]

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        segment(volume, model, device="cpu", precision="fp32", allocate=on_disk)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    probabilities_bytes = store["array"].nbytes
    assert peak - probabilities_bytes < 6.5 * volume.array.nbytes, (peak, volume.array.nbytes)
