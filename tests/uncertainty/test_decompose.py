"""The entropy decomposition: analytic cases, the exact identity, numpy and torch alike."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_medseg.uncertainty import decompose, entropy, moments, split_entropy


def _random_samples(shape=(6, 4, 5, 7), seed=0) -> np.ndarray:
    s, k, *spatial = shape
    rng = np.random.default_rng(seed)
    return np.moveaxis(rng.dirichlet(np.full(k, 0.5), size=(s, *spatial)), -1, 1).astype(np.float32)


def test_identical_samples_have_no_epistemic_uncertainty():
    one = _random_samples((1, 3, 4, 4))[0]
    samples = np.repeat(one[None], 5, axis=0)
    total, aleatoric, epistemic = decompose(samples)
    np.testing.assert_array_equal(epistemic, 0)
    np.testing.assert_allclose(total, entropy(one), rtol=1e-6)
    np.testing.assert_allclose(aleatoric, total, rtol=1e-6)


def test_confident_disagreeing_samples_are_purely_epistemic():
    a = np.array([1.0, 0.0], dtype=np.float32)[:, None]  # (K=2, 1 voxel)
    b = np.array([0.0, 1.0], dtype=np.float32)[:, None]
    total, aleatoric, epistemic = decompose(np.stack([a, b]))
    np.testing.assert_allclose(aleatoric, 0, atol=1e-9)
    np.testing.assert_allclose(epistemic, math.log(2), rtol=1e-6)
    np.testing.assert_allclose(total, math.log(2), rtol=1e-6)


def test_uniform_agreeing_samples_are_purely_aleatoric():
    samples = np.full((3, 4, 2, 2), 0.25, dtype=np.float32)
    total, aleatoric, epistemic = decompose(samples)
    np.testing.assert_allclose(total, math.log(4), rtol=1e-6)
    np.testing.assert_allclose(aleatoric, math.log(4), rtol=1e-6)
    np.testing.assert_array_equal(epistemic, 0)


def test_mixed_case_by_hand():
    # samples (0.9, 0.1) and (0.5, 0.5): mean (0.7, 0.3)
    samples = np.array([[0.9, 0.1], [0.5, 0.5]], dtype=np.float32)[:, :, None]
    total, aleatoric, epistemic = decompose(samples)
    h = lambda p: -sum(q * math.log(q) for q in p)  # noqa: E731
    assert total[0] == pytest.approx(h((0.7, 0.3)), rel=1e-6)
    assert aleatoric[0] == pytest.approx((h((0.9, 0.1)) + h((0.5, 0.5))) / 2, rel=1e-6)
    assert epistemic[0] == pytest.approx(h((0.7, 0.3)) - (h((0.9, 0.1)) + h((0.5, 0.5))) / 2, rel=1e-5)


@pytest.mark.parametrize("shape", [(6, 4, 5, 7), (3, 2, 4, 3, 5), (1, 3, 8)])
def test_identity_is_exact_and_epistemic_non_negative(shape):
    samples = _random_samples(shape, seed=len(shape))
    total, aleatoric, epistemic = decompose(samples)
    assert total.shape == aleatoric.shape == epistemic.shape == shape[2:]
    assert total.dtype == aleatoric.dtype == epistemic.dtype == np.float32
    np.testing.assert_array_equal(total, aleatoric + epistemic)
    assert epistemic.min() >= 0
    assert np.all(np.isfinite(total))


def test_rounding_negatives_are_clipped_and_identity_kept():
    total = np.array([1.0, 0.5, 0.0], dtype=np.float32)
    aleatoric = np.array([1.0 + 1e-7, 0.2, 1e-9], dtype=np.float32)
    t, a, e = split_entropy(total, aleatoric)
    np.testing.assert_array_equal(e >= 0, True)
    np.testing.assert_array_equal(t, a + e)
    assert e[0] == 0 and a[0] == pytest.approx(1.0) and e[1] == pytest.approx(0.3)


def test_zero_probabilities_are_safe():
    samples = np.zeros((2, 3, 4), dtype=np.float32)
    samples[:, 0] = 1.0
    total, aleatoric, epistemic = decompose(samples)
    assert np.all(np.isfinite(total)) and np.all(total == 0)


def test_torch_matches_numpy_and_keeps_device_and_type():
    samples = _random_samples()
    expected = decompose(samples)
    got = decompose(torch.from_numpy(samples))
    for e, g in zip(expected, got):
        assert isinstance(g, torch.Tensor) and g.dtype == torch.float32
        np.testing.assert_allclose(g.numpy(), e, atol=2e-6)
    assert torch.equal(got[0], got[1] + got[2])


def test_moments_visit_samples_and_do_not_mutate_input():
    samples = _random_samples()
    before = samples.copy()
    mean, mean_entropy = moments(samples)
    np.testing.assert_allclose(mean, samples.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(mean_entropy, np.mean([entropy(s) for s in samples], axis=0), atol=1e-6)
    np.testing.assert_array_equal(samples, before)


@pytest.mark.parametrize("shape", [(4,), (0, 3, 2), (2, 0, 3)])
def test_bad_shapes_are_quoted(shape):
    with pytest.raises(ValueError, match=r"\(S, K, \*spatial\)"):
        decompose(np.zeros(shape, dtype=np.float32))


def test_importing_the_package_and_numpy_functions_does_not_load_torch():
    code = (
        "import sys, numpy as np; import napari_medseg.uncertainty as u; "
        "u.decompose(np.full((2, 2, 3), 0.5)); u.ood_score(np.full((2, 3), 0.5)); u.calibrate_ood([0.1, 0.2]); "
        "assert 'torch' not in sys.modules, 'torch loaded'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
