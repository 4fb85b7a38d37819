"""A refinement kept on request runs only when asked, keeps the network's background, and is recorded."""

from __future__ import annotations

import numpy as np

from napari_medseg.inference import segment
from napari_medseg.types import Geometry, Volume
from napari_medseg.uncertainty import estimate_uncertainty
from tests.tiny_models import tiny_model

ON_REQUEST = {"em_refine": {"iterations": 8, "prior_weight": 1.0, "keep_background": True, "on_request": True}}


def _scan() -> Volume:
    rng = np.random.default_rng(3)
    array = rng.choice([0.0, 300.0, 600.0, 900.0], size=(12, 24, 20)).astype(np.float32)
    return Volume(array + rng.normal(0, 20, array.shape).astype(np.float32), Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))


def test_the_network_decides_unless_refinement_is_asked_for():
    volume = _scan()
    offering, plain_model = tiny_model(0, postprocess=ON_REQUEST), tiny_model(0)
    plain = segment(volume, plain_model, device="cpu", precision="fp32")
    default = segment(volume, offering, device="cpu", precision="fp32")
    np.testing.assert_array_equal(default.probabilities, plain.probabilities)
    assert "em_refine" not in default.postprocess

    refined = segment(volume, offering, device="cpu", precision="fp32", refine=True)
    assert refined.postprocess["em_refine"]["on_request"] is True
    assert refined.postprocess["applied"]["mixture"]["region"] == "where the network found tissue"
    assert (refined.labels[plain.labels == 0] == 0).all()  # the network's background stays background
    assert (refined.labels[plain.labels > 0] > 0).all()
    assert not np.array_equal(refined.labels, plain.labels)  # and the intensities moved tissue boundaries
    np.testing.assert_allclose(refined.probabilities.sum(axis=-1), 1.0, atol=1e-5)


def test_uncertainty_refines_each_sample_only_when_asked():
    volume, model = _scan(), tiny_model(0, postprocess=ON_REQUEST)
    network = estimate_uncertainty(volume, model, samples=3, device="cpu", postprocessing=False)
    default = estimate_uncertainty(volume, model, samples=3, device="cpu")
    np.testing.assert_array_equal(default.mean_probabilities, network.mean_probabilities)
    refined = estimate_uncertainty(volume, model, samples=3, device="cpu", refine=True)
    labels = refined.mean_probabilities.argmax(axis=-1)
    assert not np.array_equal(labels, network.mean_probabilities.argmax(axis=-1))
    np.testing.assert_allclose(refined.total, refined.aleatoric + refined.epistemic, atol=1e-5)
