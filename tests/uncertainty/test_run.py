"""The whole-volume driver: input grid, memory-bounded accumulation, OOD, progress, cancel."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from napari_medseg.control import Cancelled
from napari_medseg.preprocess import prepare
from napari_medseg.types import Geometry, Volume
from napari_medseg.uncertainty import (
    METHODS,
    EnsembleSampler,
    MCDropoutSampler,
    TTASampler,
    decompose,
    estimate_uncertainty,
)
from napari_medseg.uncertainty.ood import MAIN_SCORE, ood_score
from tests.tiny_models import tiny_model


def _head(shape=(8, 20, 18)) -> np.ndarray:
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    radius = np.sqrt(z**2 + y**2 + x**2)
    noise = np.random.default_rng(0).random(shape)
    return (np.where(radius < 0.8, 100 + 50 * (radius < 0.5), 0) + noise).astype(np.float32)


def _volume(shape=(8, 20, 18), spacing=(1.0, 1.0, 1.0)) -> Volume:
    return Volume(_head(shape), Geometry(spacing, (5.0, -3.0, 2.0), np.diag([1.0, -1.0, -1.0])))


def _models(method, spatial_dims=2):
    if method == "ensemble":
        return [tiny_model(0, spatial_dims=spatial_dims), tiny_model(1, spatial_dims=spatial_dims)]
    return tiny_model(0, spatial_dims=spatial_dims)


def _naive(method, models, volume, samples, batch_size):
    """All samples at once, decomposed, mapped back: what the driver must reproduce."""
    sampler = {"mc-dropout": MCDropoutSampler, "tta": TTASampler}.get(method)
    sampler = EnsembleSampler(models) if sampler is None else sampler(models, samples)
    prepared = prepare(volume, orientation=sampler.config.canonical_orientation, spacing=sampler.config.target_spacing)
    assert not prepared.resampled
    all_samples = sampler.sample(prepared.image, batch_size=batch_size)
    total, aleatoric, epistemic = decompose(all_samples)
    return [prepared.to_input_grid(m) for m in (total, aleatoric, epistemic)], all_samples.mean(axis=0), prepared


@pytest.mark.parametrize("method", METHODS)
def test_driver_matches_the_naive_all_samples_computation(method):
    volume = _volume()
    models = _models(method)
    result = estimate_uncertainty(volume, models, method=method, samples=3, device="cpu", precision="fp32", batch_size=3)
    (total, aleatoric, epistemic), mean, prepared = _naive(method, models, volume, 3, 3)
    np.testing.assert_allclose(result.total, total, atol=1e-5)
    np.testing.assert_allclose(result.aleatoric, aleatoric, atol=1e-5)
    np.testing.assert_allclose(result.epistemic, epistemic, atol=1e-5)
    expected_mean = np.moveaxis(prepared.reorientation.invert(mean, channel_axis=0), 0, -1)
    np.testing.assert_allclose(result.mean_probabilities, expected_mean, atol=1e-6)
    assert result.samples == (2 if method == "ensemble" else 3) and result.method == method


def test_3d_blended_windows_match_the_naive_mean_and_bound_the_aleatoric_part():
    """Overlapping windows: mean and total are exact; the blended mean entropy is a lower
    bound of the naive one (entropy is concave), so epistemic is an upper bound."""
    volume = _volume((18, 20, 17))
    model = tiny_model(spatial_dims=3)
    result = estimate_uncertainty(volume, model, method="tta", samples=2, device="cpu", precision="fp32")
    (total, aleatoric, _), mean, prepared = _naive("tta", model, volume, 2, 2)
    expected_mean = np.moveaxis(prepared.reorientation.invert(mean, channel_axis=0), 0, -1)
    np.testing.assert_allclose(result.mean_probabilities, expected_mean, atol=1e-6)
    np.testing.assert_allclose(result.total, total, atol=1e-5)
    assert np.all(result.aleatoric <= aleatoric + 1e-5)
    assert np.abs(result.aleatoric - aleatoric).mean() < 0.05


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_outputs_live_on_the_input_grid_and_identity_holds(spatial_dims):
    volume = _volume((18, 20, 17)) if spatial_dims == 3 else _volume()
    result = estimate_uncertainty(volume, tiny_model(spatial_dims=spatial_dims), samples=2, device="cpu")
    for name in ("total", "aleatoric", "epistemic"):
        array = getattr(result, name)
        assert array.shape == volume.shape and array.dtype == np.float32, name
    assert result.mean_probabilities.shape == (*volume.shape, 4)
    np.testing.assert_allclose(result.mean_probabilities.sum(axis=-1), 1, atol=1e-5)
    np.testing.assert_array_equal(result.total, result.aleatoric + result.epistemic)
    assert result.epistemic.min() >= 0 and result.epistemic.max() > 0
    np.testing.assert_array_equal(result.labels, np.argmax(result.mean_probabilities, axis=-1))
    assert set(result.timings) >= {"preprocess", "sampling", "restore", "total"}


def test_flipped_and_permuted_copy_gets_the_same_maps():
    original = _volume()
    permutation = (2, 0, 1)
    array = np.flip(np.transpose(original.array, permutation), axis=1).copy()
    direction = original.direction[:, list(permutation)]
    direction[:, 1] *= -1
    first = [0, 0, 0]
    first[permutation[1]] = original.shape[permutation[1]] - 1
    origin = tuple(original.geometry.index_to_physical(first)[0])
    copy = Volume(array, Geometry((1.0, 1.0, 1.0), origin, direction))
    a = estimate_uncertainty(original, tiny_model(), samples=2, device="cpu", precision="fp32")
    b = estimate_uncertainty(copy, tiny_model(), samples=2, device="cpu", precision="fp32")
    back = np.transpose(np.flip(b.epistemic, axis=1), np.argsort(permutation))
    np.testing.assert_allclose(back, a.epistemic, atol=1e-6)


def test_resampled_scan_maps_back_with_the_identity_kept():
    volume = _volume((6, 11, 10), spacing=(2.0, 1.6, 1.6))
    result = estimate_uncertainty(volume, tiny_model(), method="tta", samples=2, device="cpu")
    assert result.total.shape == volume.shape
    np.testing.assert_array_equal(result.total, result.aleatoric + result.epistemic)
    assert result.epistemic.min() >= 0


def test_ood_is_assessed_on_the_plain_prediction_with_the_bundle_threshold():
    volume = _volume()
    model = tiny_model()
    result = estimate_uncertainty(volume, model, samples=2, device="cpu", precision="fp32")
    assert result.ood.score_name == MAIN_SCORE and 0 <= result.ood.score <= 1
    assert result.ood.threshold is None
    # without a threshold the score decides nothing; the MR model's Hounsfield-air test still runs
    assert result.ood.flag is False and [s.name for s in result.ood.signals if s.flag is not None] == ["hounsfield_air"]
    assert result.ood.foreground_epistemic is not None
    # the plain pass is the same whichever sampler ran, so is the score
    tta = estimate_uncertainty(volume, model, method="tta", samples=2, device="cpu", precision="fp32")
    assert tta.ood.score == pytest.approx(result.ood.score, abs=1e-6)
    plain = prepare(volume, orientation="RAS", spacing=(1.0, 1.0, 1.0))
    from napari_medseg.inference.engine import predict_probabilities

    probabilities = predict_probabilities(model, plain.image, device=__import__("torch").device("cpu"), amp=None)
    assert ood_score(probabilities)[MAIN_SCORE] == pytest.approx(result.ood.score, abs=1e-6)

    model.config = dataclasses.replace(model.config, extra={**model.config.extra, "ood": {
        "score": MAIN_SCORE, "threshold": result.ood.score / 2, "calibration": {}}})  # fmt: skip
    flagged = estimate_uncertainty(volume, model, samples=2, device="cpu")
    assert flagged.ood.flag is True and flagged.report()["ood"]["flag"] is True
    assert flagged.report()["method"] == "mc-dropout" and flagged.report()["samples"] == 2


def test_progress_and_cancel():
    volume = _volume()
    calls = []
    estimate_uncertainty(volume, tiny_model(), samples=2, device="cpu", batch_size=3,
                         progress=lambda done, total: calls.append((done, total)))  # fmt: skip
    assert calls == [(3, 8), (6, 8), (8, 8)]
    model = tiny_model()
    model.train()
    with pytest.raises(Cancelled):
        estimate_uncertainty(volume, model, samples=2, device="cpu", batch_size=3, should_stop=lambda: bool(calls.pop()))
    assert all(m.training for m in model.modules())


def test_wrong_method_or_model_count():
    with pytest.raises(ValueError, match="'bayes'"):
        estimate_uncertainty(_volume(), tiny_model(), method="bayes")
    with pytest.raises(ValueError, match="at least 2 models"):
        estimate_uncertainty(_volume(), [tiny_model()], method="ensemble")
    with pytest.raises(ValueError, match="takes one model"):
        estimate_uncertainty(_volume(), [tiny_model(0), tiny_model(1)], method="tta")


# --- post-processed samples -------------------------------------------------------


def _postprocessed_model(prior_weight: float):
    settings = {"largest_component": True, "em_refine": {"iterations": 5, "prior_weight": prior_weight}}
    return tiny_model(0, postprocess=settings)


@pytest.mark.parametrize("em", [True, False])
def test_shortcut_moments_equal_post_processing_every_sample(em):
    """For a fixed mask and a prior-free mixture, post-processing the moments is exact."""
    import torch

    from napari_medseg.postprocess import PostprocessFit
    from napari_medseg.postprocess.mixture import TissueMixture
    from napari_medseg.uncertainty.decompose import moments
    from napari_medseg.uncertainty.run import _postprocess_moments, _sample_transform

    rng = np.random.default_rng(1)
    samples = rng.dirichlet(np.ones(4), size=(5, 6, 7, 8)).transpose(0, 4, 1, 2, 3).astype(np.float32)  # S, K, z, y, x
    image = rng.random((6, 7, 8)).astype(np.float32)
    mask = rng.random((6, 7, 8)) > 0.3
    mixture = TissueMixture(np.array([0.2, 0.5, 0.8]), np.array([0.01, 0.02, 0.01]), np.array([0.2, 0.5, 0.3]), 0.0, 1e-3)
    fit = PostprocessFit(mask=mask, mixture=mixture if em else None, details={}, em=em)
    region = (slice(0, 6), slice(0, 7), slice(0, 8))
    per_sample = _sample_transform(fit, image)(torch.from_numpy(samples), region)
    expected_mean, expected_entropy = (t.numpy() for t in moments(per_sample))
    mean, mean_entropy = (t.numpy() for t in moments(torch.from_numpy(samples)))
    got_mean, got_entropy = _postprocess_moments(fit, image, mean, mean_entropy)
    np.testing.assert_allclose(got_mean, expected_mean, atol=1e-6)
    np.testing.assert_allclose(got_entropy, expected_entropy, atol=1e-5)


def test_post_processed_uncertainty_describes_segment_labels():
    from napari_medseg.inference import segment

    volume = _volume()
    model = _postprocessed_model(0.0)
    result = estimate_uncertainty(volume, model, samples=3, device="cpu", precision="fp32", batch_size=3)
    labels = segment(volume, model, device="cpu", precision="fp32", batch_size=3).labels
    assert result.postprocessed and result.report()["postprocessed"]
    np.testing.assert_array_equal(result.labels, labels)
    np.testing.assert_allclose(result.epistemic, 0.0, atol=1e-6)  # the mixture ignores the samples
    assert result.total.max() > 0.01
    network = estimate_uncertainty(volume, model, samples=3, device="cpu", precision="fp32", batch_size=3,
                                   postprocessing=False)  # fmt: skip
    assert not network.postprocessed and network.epistemic.max() > 1e-4


def test_network_prior_in_the_mixture_makes_samples_differ():
    volume = _volume()
    result = estimate_uncertainty(volume, _postprocessed_model(0.7), samples=3, device="cpu", precision="fp32",
                                  batch_size=3)  # fmt: skip
    assert result.postprocessed and "postprocess_fit" in result.timings
    np.testing.assert_allclose(result.total, result.aleatoric + result.epistemic, atol=1e-6)
    assert result.epistemic.max() > 1e-4
    np.testing.assert_allclose(result.mean_probabilities.sum(axis=-1), 1.0, atol=1e-5)


def test_a_network_override_makes_samples_differ_and_is_not_taken_for_the_shortcut():
    from napari_medseg.postprocess import PostprocessSettings

    fixed = {"largest_component": True, "em_refine": {"iterations": 5, "prior_weight": 0.0}}
    assert not PostprocessSettings.from_dict(fixed).sample_dependent
    overridden = {**fixed, "em_refine": {**fixed["em_refine"], "network_override": 0.3}}
    assert PostprocessSettings.from_dict(overridden).sample_dependent
    volume = _volume()
    result = estimate_uncertainty(volume, tiny_model(0, postprocess=overridden), samples=3, device="cpu",
                                  precision="fp32", batch_size=3)  # fmt: skip
    np.testing.assert_allclose(result.total, result.aleatoric + result.epistemic, atol=1e-6)
    assert result.epistemic.max() > 1e-4
