"""Entropy decomposition of sampled class probabilities into aleatoric and epistemic parts.

For S samples ``p_s`` of K class probabilities at each voxel (natural logarithm, nats):

- total = H(mean_s p_s), the entropy of the mean prediction;
- aleatoric = mean_s H(p_s), the expected entropy of one sample;
- epistemic = total - aleatoric, the mutual information between the prediction and the
  sample (model parameters for MC dropout and ensembles, the augmentation for TTA).

Epistemic is non-negative in exact arithmetic (entropy is concave); rounding can make it a
tiny negative number. Such values are clipped to 0 and aleatoric is lowered to total, and
total is then *defined* as the float32 sum ``aleatoric + epistemic``, so the identity
``total == aleatoric + epistemic`` holds exactly, element for element, in float32.
Works on numpy arrays (computed in float64) and torch tensors (computed on their device in
float32, float64 when given); torch is only imported when a tensor is passed in.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

EPS = 1e-12

__all__ = ["EPS", "decompose", "entropy", "moments", "split_entropy"]


def _is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def entropy(probabilities: Any, axis: int = 0) -> Any:
    """Shannon entropy in nats over the class ``axis`` (``p log p`` with p clipped at 1e-12).

    Args:
        probabilities: numpy array or torch tensor, e.g. (K, z, y, x) with ``axis=0`` or
            (z, y, x, K) with ``axis=-1``.

    Returns:
        The same type, the class axis removed; numpy results are float32.
    """
    if _is_tensor(probabilities):
        p = probabilities if probabilities.is_floating_point() else probabilities.float()
        return -(p * p.clamp_min(EPS).log()).sum(dim=axis)
    p = np.asarray(probabilities)
    out = np.zeros(np.delete(np.array(p.shape), axis % p.ndim), dtype=np.float64)
    for k in range(p.shape[axis]):  # one class at a time: no (K, ...) float64 temporary
        pk = np.take(p, k, axis=axis).astype(np.float64)
        out -= pk * np.log(np.maximum(pk, EPS))
    return out.astype(np.float32)


def moments(prob_samples: Any) -> tuple[Any, Any]:
    """Mean probabilities (K, *spatial) and mean entropy (*spatial) of (S, K, *spatial) samples.

    These two running quantities are all a memory-bounded accumulation needs (see
    :func:`split_entropy`). Samples are visited one at a time.
    """
    _check(prob_samples)
    if _is_tensor(prob_samples):
        samples = prob_samples if prob_samples.is_floating_point() else prob_samples.float()
        return samples.mean(dim=0), entropy(samples, axis=1).mean(dim=0)
    samples = np.asarray(prob_samples)
    mean = np.zeros(samples.shape[1:], dtype=np.float64)
    mean_entropy = np.zeros(samples.shape[2:], dtype=np.float64)
    for sample in samples:
        mean += sample
        mean_entropy += entropy(sample, axis=0)
    count = samples.shape[0]
    return (mean / count).astype(np.float32), (mean_entropy / count).astype(np.float32)


def split_entropy(total: Any, aleatoric: Any) -> tuple[Any, Any, Any]:
    """(total, aleatoric, epistemic) float32 with ``total == aleatoric + epistemic`` exactly.

    ``total`` is the entropy of the mean probabilities, ``aleatoric`` the mean entropy of the
    samples (same shape). Negative differences (rounding) become 0 epistemic.
    """
    if _is_tensor(total):
        total64, aleatoric64 = total.double(), aleatoric.double()
        epistemic = (total64 - aleatoric64).clamp_min(0).float()
        aleatoric32 = aleatoric64.minimum(total64).float()
        return aleatoric32 + epistemic, aleatoric32, epistemic
    total64 = np.asarray(total, dtype=np.float64)
    aleatoric64 = np.asarray(aleatoric, dtype=np.float64)
    epistemic = np.maximum(total64 - aleatoric64, 0.0).astype(np.float32)
    aleatoric32 = np.minimum(aleatoric64, total64).astype(np.float32)
    return aleatoric32 + epistemic, aleatoric32, epistemic


def decompose(prob_samples: Any) -> tuple[Any, Any, Any]:
    """Split the predictive uncertainty of sampled probabilities, in nats.

    Args:
        prob_samples: (S, K, *spatial) class probabilities (each sample sums to 1 over K),
            numpy array or torch tensor; e.g. (10, 4, 64, 64) for 10 MC-dropout samples of a
            4-class 2D slice, or (5, 2, 32, 32, 32) for a 3D patch.

    Returns:
        ``(total, aleatoric, epistemic)``, each of shape ``spatial`` and float32 (numpy in,
        numpy out; tensor in, tensor out on the same device): total = entropy of the mean,
        aleatoric = mean entropy, epistemic = mutual information = total - aleatoric >= 0,
        with the identity exact (see the module docstring).

    Raises:
        ValueError: ``prob_samples`` is not (S, K, ...) with S, K >= 1.
    """
    mean, mean_entropy = moments(prob_samples)
    return split_entropy(entropy(mean, axis=0), mean_entropy)


def _check(prob_samples: Any) -> None:
    shape = tuple(prob_samples.shape)
    if len(shape) < 2 or shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"prob_samples of shape {shape} must be (S, K, *spatial) with S, K >= 1")
