"""Samplers with tiny real networks: modes, encoder-once path, seeds, flips, ensembles."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from napari_medseg.control import Cancelled
from napari_medseg.inference.engine import predict_probabilities
from napari_medseg.models import build_model, dropout_modules
from napari_medseg.uncertainty import EnsembleSampler, MCDropoutSampler, TTASampler, mc_dropout
from tests.tiny_models import CLASS_NAMES, tiny_config, tiny_model


def _image(shape=(5, 20, 18), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _modes(model: nn.Module) -> dict[str, bool]:
    return {name: module.training for name, module in model.named_modules()}


def test_mc_dropout_switches_only_the_sites_dropout_and_restores():
    model = tiny_model()
    model.train()
    model.encoder.eval()  # a mixed state the caller chose
    before = _modes(model)
    sites = dropout_modules(model, ("decoder",))
    with mc_dropout(model, ("decoder",), p=0.5) as modules:
        assert {id(m) for m in modules} == {id(m) for m in sites}
        training = {id(m) for m in model.modules() if m.training}
        assert training == {id(m) for m in sites}
        assert all(m.p == 0.5 for m in modules)
    assert _modes(model) == before
    assert all(m.p == 0.2 for m in sites)


def test_mc_dropout_restores_after_an_exception():
    model = tiny_model()
    before = _modes(model)
    with pytest.raises(RuntimeError):
        with mc_dropout(model, ("decoder",), p=0.4):
            raise RuntimeError("boom")
    assert _modes(model) == before
    assert all(m.p == 0.2 for m in dropout_modules(model))


def test_sampling_sees_dropout_on_only_in_decoder_then_restores_even_on_failure():
    model = tiny_model()
    seen: list[set[str]] = []

    def record(module, args):
        seen.append({name for name, m in model.named_modules() if m.training})

    handle = model.decoder.register_forward_pre_hook(record)
    sampler = MCDropoutSampler(model, 3)
    sampler.sample(_image((2, 12, 12)), batch_size=2)
    handle.remove()
    dropout_names = {name for name, m in model.named_modules() if isinstance(m, nn.Dropout)}
    assert seen[0] == set()  # the plain pass
    assert all(s == dropout_names for s in seen[1:]) and len(seen) == 4
    assert not any(m.training for m in model.modules())

    calls = {"n": 0}

    def fail(module, args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("fails mid-sampling")

    model.train()
    before = _modes(model)
    handle = model.decoder.register_forward_pre_hook(fail)
    with pytest.raises(RuntimeError):
        sampler.sample(_image((2, 12, 12)))
    handle.remove()
    assert _modes(model) == before


def test_encoder_once_equals_full_passes_for_the_same_seed():
    model = tiny_model()
    image = _image()
    encoder_calls = {"n": 0}
    handle = model.encoder.register_forward_hook(lambda *a: encoder_calls.__setitem__("n", encoder_calls["n"] + 1))
    sampler = MCDropoutSampler(model, 4, seed=3)
    assert sampler.decoder_only
    fast = sampler.sample(image, batch_size=2)
    assert encoder_calls["n"] == 3  # once per batch of slices
    sampler.decoder_only = False
    naive = sampler.sample(image, batch_size=2)
    handle.remove()
    assert encoder_calls["n"] == 3 + 3 * 5  # plain + 4 samples per batch
    assert fast.shape == (4, 4, *image.shape)
    np.testing.assert_allclose(fast, naive, atol=1e-6)
    assert np.abs(fast[0] - fast[1]).max() > 1e-3  # samples differ: dropout was on


def test_shared_decoder_levels_when_only_fine_levels_are_sampled():
    model = tiny_model()
    image = _image()
    sampler = MCDropoutSampler(model, 3, seed=5, sites=("decoder.levels.1",))
    assert sampler.decoder_only and sampler.shared_levels == 1 and sampler.split_first_level
    level0, conv1 = {"n": 0}, {"n": 0}
    handle = model.decoder.levels[0].register_forward_hook(lambda *a: level0.__setitem__("n", level0["n"] + 1))
    handle1 = model.decoder.levels[1].block.conv1.register_forward_hook(lambda *a: conv1.__setitem__("n", conv1["n"] + 1))
    fast = sampler.sample(image, batch_size=5)
    assert level0["n"] == 1  # the level before the first sampled one runs once per batch
    assert conv1["n"] == 1  # and the sampled level up to its dropout too
    sampler.decoder_only = False
    naive = sampler.sample(image, batch_size=5)
    handle.remove()
    handle1.remove()
    np.testing.assert_allclose(fast, naive, atol=1e-6)
    assert np.abs(fast[0] - fast[1]).max() > 1e-4
    assert MCDropoutSampler(model, 2).shared_levels == 0


def test_narrower_sites_must_stay_inside_the_bundle_sites():
    config = dataclasses.replace(tiny_config(), arch_kwargs={"features": [4, 8, 16], "dropout": 0.2,
                                                             "dropout_sites": ["encoder", "decoder"]})  # fmt: skip
    model = build_model(config)
    with pytest.raises(ValueError, match="outside the bundle's dropout_sites"):
        MCDropoutSampler(model, 2, sites=("encoder",))
    with pytest.raises(ValueError, match="hold no dropout module"):
        MCDropoutSampler(tiny_model(), 2, sites=("encoder",))


def test_mc_samples_are_reproducible_and_leave_the_global_generator_alone():
    model = tiny_model()
    image = _image((3, 12, 14))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = MCDropoutSampler(model, 3, seed=7).sample(image)
    assert torch.equal(torch.get_rng_state(), state)
    b = MCDropoutSampler(model, 3, seed=7).sample(image)
    c = MCDropoutSampler(model, 3, seed=8).sample(image)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3


def test_full_forward_path_when_a_site_is_outside_the_decoder():
    config = dataclasses.replace(tiny_config(), arch_kwargs={"features": [4, 8, 16], "dropout": 0.2,
                                                             "dropout_sites": ["bottleneck", "decoder"]},
                                 dropout_sites=("bottleneck", "decoder"))  # fmt: skip
    torch.manual_seed(0)
    model = build_model(config).eval()
    sampler = MCDropoutSampler(model, 2)
    assert not sampler.decoder_only
    samples = sampler.sample(_image((2, 12, 12)))
    assert samples.shape == (2, 4, 2, 12, 12)
    np.testing.assert_allclose(samples.sum(axis=1), 1, atol=1e-5)


def test_mc_needs_dropout_sites():
    model = tiny_model()
    model.config = dataclasses.replace(model.config, dropout_sites=())
    with pytest.raises(ValueError, match="dropout_sites"):
        MCDropoutSampler(model, 2)


class PointwiseModel(nn.Module):
    """A 1x1 convolution: commutes with flips, so un-flipped TTA samples must agree."""

    def __init__(self, spatial_dims=2):
        super().__init__()
        self.config = tiny_config(spatial_dims=spatial_dims)
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        torch.manual_seed(0)
        self.conv = conv(self.config.in_channels, 4, 1)

    def forward(self, x):
        return self.conv(x) * 5


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_tta_flips_are_undone(spatial_dims):
    model = PointwiseModel(spatial_dims)
    sampler = TTASampler(model, 4, log_gamma=0.0, scale=0.0)
    assert [a.flips for a in sampler.augmentations] == [(), (-1,), (-2,), (-2, -1)]
    shape = (4, 11, 9) if spatial_dims == 2 else (18, 11, 9)
    samples = sampler.sample(_image(shape))
    for s in samples[1:]:
        np.testing.assert_allclose(s, samples[0], atol=1e-6)


def test_tta_samples_are_flipped_back_predictions_of_perturbed_inputs():
    model = tiny_model()
    image = _image((3, 16, 12))
    sampler = TTASampler(model, 3, seed=1)
    samples = sampler.sample(image, batch_size=3)
    plain = predict_probabilities(model, image, device=torch.device("cpu"), amp=None)
    np.testing.assert_allclose(samples[0], plain, atol=1e-6)
    aug = sampler.augmentations[2]
    assert aug.flips == (-2,) and aug.gamma != 1.0 and aug.scale != 1.0
    transformed = np.sign(image) * np.abs(image) ** aug.gamma * aug.scale
    expected = predict_probabilities(model, transformed[:, ::-1].copy(), device=torch.device("cpu"), amp=None)
    np.testing.assert_allclose(samples[2], expected[:, :, ::-1], atol=1e-5)


def test_ensemble_one_sample_per_model_in_order():
    models = [tiny_model(0), tiny_model(1), tiny_model(2)]
    image = _image((3, 12, 10))
    samples = EnsembleSampler(models).sample(image)
    assert samples.shape == (3, 4, *image.shape)
    for model, sample in zip(models, samples):
        expected = predict_probabilities(model, image, device=torch.device("cpu"), amp=None)
        np.testing.assert_allclose(sample, expected, atol=1e-6)


def test_ensemble_members_must_share_classes():
    other = tiny_model(1)
    other.config = dataclasses.replace(other.config, class_names=(*CLASS_NAMES[:3], "lesion"))
    with pytest.raises(ValueError, match="lesion"):
        EnsembleSampler([tiny_model(0), other])
    other = tiny_model(2)
    other.config = dataclasses.replace(other.config, target_spacing=(2.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="target_spacing"):
        EnsembleSampler([tiny_model(0), other])


def test_3d_windows_sampling_shape():
    model = tiny_model(spatial_dims=3)
    image = _image((18, 17, 16))
    samples = MCDropoutSampler(model, 2).sample(image)
    assert samples.shape == (2, 4, 18, 17, 16)
    np.testing.assert_allclose(samples.sum(axis=1), 1, atol=1e-5)


def test_cancel_between_batches():
    model = tiny_model()
    calls = []
    with pytest.raises(Cancelled):
        TTASampler(model, 2).sample(_image(), batch_size=2, should_stop=lambda: len(calls) > 0,
                                    progress=lambda d, t: calls.append((d, t)))  # fmt: skip
    assert calls == [(2, 5)]
    assert not any(m.training for m in model.modules())


def test_bad_arguments_are_quoted():
    with pytest.raises(ValueError, match="n_samples 0"):
        TTASampler(tiny_model(), 0)
    with pytest.raises(ValueError, match="no .config"):
        TTASampler(nn.Conv2d(3, 4, 1), 2)
