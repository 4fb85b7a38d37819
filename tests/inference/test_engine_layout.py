"""How the engine runs a network: channels-last memory for 2D models (and the model left
as it was), and the probability floor."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_medseg.control import Cancelled
from napari_medseg.inference.engine import PROBABILITY_FLOOR, class_probabilities, predict_probabilities, predict_slices
from napari_medseg.inference.tiling import context_stack
from tests.tiny_models import tiny_model


def _image(shape=(6, 19, 23)) -> np.ndarray:
    return np.random.default_rng(0).random(shape).astype(np.float32)


def _direct(model, image: np.ndarray) -> np.ndarray:
    """(K, z, y, x) softmax of the model over every slice at once, in the default layout."""
    volume = torch.from_numpy(image)
    with torch.inference_mode():
        logits = model(context_stack(volume, torch.arange(image.shape[0]), model.config.context_offsets))
    return torch.softmax(logits, dim=1).transpose(0, 1).numpy()


def _weights_layouts(model) -> set[str]:
    return {
        "channels_last" if p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() else "default"
        for p in model.parameters()
        if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1
    }


def test_a_2d_model_predicts_in_channels_last_and_is_left_in_its_own_layout():
    model = tiny_model().eval()
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(_weights_layouts(module)))
    image = _image()
    probabilities = predict_probabilities(model, image, device=torch.device("cpu"), amp=None, batch_size=4)
    assert seen and all(layouts == {"channels_last"} for layouts in seen)
    assert _weights_layouts(model) == {"default"}
    np.testing.assert_allclose(probabilities, _direct(model, image), atol=1e-5)


def test_the_layout_comes_back_when_the_run_is_stopped():
    model = tiny_model().train()
    with pytest.raises(Cancelled):
        predict_probabilities(model, _image(), device=torch.device("cpu"), amp=None, should_stop=lambda: True)
    assert _weights_layouts(model) == {"default"} and model.training


def test_probabilities_below_the_floor_are_zero_and_the_labels_unchanged():
    model = tiny_model().eval()
    with torch.no_grad():  # a confident network: most classes far below 2^-24 somewhere
        for parameter in model.parameters():
            parameter.mul_(4.0)
    image = _image()
    exact = _direct(model, image)
    assert ((exact > 0) & (exact < PROBABILITY_FLOOR)).any()
    probabilities = predict_probabilities(model, image, device=torch.device("cpu"), amp=None)
    assert not ((probabilities > 0) & (probabilities < PROBABILITY_FLOOR)).any()
    np.testing.assert_array_equal(probabilities.argmax(axis=0), exact.argmax(axis=0))
    np.testing.assert_allclose(probabilities, exact, atol=1e-4)  # large logits: the layouts' sums differ a little


def test_an_output_array_of_the_wrong_shape_is_refused_by_name_and_nothing_is_left_running():
    model = tiny_model()
    wrong = np.zeros((4, 6, 19, 22), np.float32)
    with pytest.raises(ValueError, match=r"output array \(4, 6, 19, 22\) float32 must be \(4, 6, 19, 23\) float32"):
        predict_slices(model, _image(), offsets=(-2, 0, 2), batch_size=4, out=wrong)
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("store")]


@pytest.mark.parametrize("shape", [(3, 4, 37, 41), (4, 4, 18, 22)])
def test_probabilities_do_not_depend_on_the_number_of_threads(shape):
    """A cohort worker runs one thread, ``medseg segment`` all of them: the same bytes."""
    logits = (torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * 8).bfloat16()
    threads = torch.get_num_threads()
    try:
        results = []
        for count in (1, 2):
            torch.set_num_threads(count)
            results += [class_probabilities(logits), class_probabilities(logits.contiguous(memory_format=torch.channels_last))]
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(results[0], other) for other in results[1:])
    np.testing.assert_allclose(results[0].sum(dim=1).numpy(), 1.0, atol=1e-5)
