"""Step 2 of post-processing: a per-scan intensity model, as SPM and FSL FAST do.

Inside the brain mask, the network's tissue posteriors act as a spatial prior and a
Gaussian per tissue class is fitted to this scan's intensities by expectation-maximisation:

    r_k(x) ∝ pi_k · prior_k(x)^w · N(I(x); mu_k, sigma_k^2)

with mixing proportions pi_k fitted too when there is no network prior (w = 0, a plain
Gaussian mixture) and equal otherwise: the network already says how likely each class is
at x, and a fitted global proportion would count class frequency twice and shrink small
classes. The network decides where the brain is and roughly which tissue; the scan's own
intensities sharpen the tissue boundaries.

A model with more classes than tissues (the brain structures) gives each class a tissue
group (``groups``): the mixture has one Gaussian per group, its prior the network's
probabilities summed per group, and each group's posterior is shared among its classes
in the network's proportions, so the intensities move the boundaries between tissues and
the network alone decides between the structures of one tissue.

Step 3, ``network_override`` (fine-tuned versions, see
:mod:`napari_medseg.postprocess.finetuned`): where the network is confident and disagrees
with the mixture, its own class wins.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TissueMixture:
    """A per-scan Gaussian mixture over the tissue classes (1..K-1), fitted by :func:`fit_mixture`.

    ``means``, ``variances``, ``mixing``: (K-1,) float64 in normalised intensity units;
    ``prior_weight`` and ``min_prior``: how the network prior enters the posterior.
    """

    means: np.ndarray
    variances: np.ndarray
    mixing: np.ndarray
    prior_weight: float
    min_prior: float

    def posterior(self, values: np.ndarray, tissue_prior: np.ndarray) -> np.ndarray:
        """Tissue posteriors (K-1, N) of intensities ``values`` (N,) given the network's
        tissue probabilities ``tissue_prior`` (K-1, N):
        r_k ∝ pi_k · prior_k^w · N(value; mu_k, sigma_k^2)."""
        values = np.asarray(values, dtype=np.float64)
        prior = np.asarray(tissue_prior, dtype=np.float64)
        prior = np.maximum(prior / np.maximum(prior.sum(axis=0, keepdims=True), 1e-12), self.min_prior)
        log_likelihood = -0.5 * (
            (values[None] - self.means[:, None]) ** 2 / self.variances[:, None] + np.log(self.variances)[:, None]
        )
        logits = np.log(self.mixing)[:, None] + self.prior_weight * np.log(prior) + log_likelihood
        logits -= logits.max(axis=0, keepdims=True)
        responsibilities = np.exp(logits)
        return responsibilities / responsibilities.sum(axis=0, keepdims=True)


def fit_mixture(
    image: np.ndarray,
    probabilities: np.ndarray,
    mask: np.ndarray,
    *,
    iterations: int = 12,
    prior_weight: float = 1.0,
    min_prior: float = 1e-3,
    max_voxels: int = 250_000,
    groups: np.ndarray | None = None,
) -> TissueMixture | None:
    """Fit the per-scan tissue mixture inside ``mask`` by EM (None if the mask is empty).

    Args:
        image: (z, y, x) float32 normalised intensities.
        probabilities: (K, z, y, x) network probabilities, class 0 background.
        mask: (z, y, x) bool, where tissue is (the brain).
        iterations: EM iterations.
        prior_weight: exponent w of the network prior.
        max_voxels: EM runs on every n-th voxel of the mask (raster order) so that at
            most this many take part; nine parameters need no more, and a brain has
            millions of voxels.
        groups: (K,) int tissue group of each class (0 for the background, groups
            1..G), or None: each class is its own group.
    """
    if not mask.any() or probabilities.shape[0] < 2:
        return None
    index = every_nth_index(mask, max_voxels)
    values = image.reshape(-1)[index].astype(np.float64)
    grouped = group_sums(probabilities.reshape(probabilities.shape[0], -1)[:, index], groups)
    k = grouped.shape[0]
    prior = grouped[1:].astype(np.float64)
    prior = np.maximum(prior / np.maximum(prior.sum(axis=0, keepdims=True), 1e-12), min_prior)

    # Start from intensity quantiles placed in the order of the network's class means, so
    # that a poor network prior cannot trap EM in a bad optimum; the network still names
    # the clusters (and, with w > 0, pulls them spatially).
    network_means = (prior @ values) / prior.sum(axis=1)
    order = np.argsort(network_means)
    quantiles = np.quantile(values, np.linspace(0.15, 0.85, k - 1))
    start_means = np.empty(k - 1)
    start_means[order] = quantiles
    spread = max(values.std() / (k - 1), 1e-6)
    responsibilities = np.exp(-0.5 * ((values[None] - start_means[:, None]) / spread) ** 2) * prior**prior_weight
    responsibilities /= np.maximum(responsibilities.sum(axis=0, keepdims=True), 1e-300)
    mixture = None
    for _ in range(iterations):
        weights = responsibilities.sum(axis=1) + 1e-9
        means = (responsibilities @ values) / weights
        variances = (responsibilities * (values[None] - means[:, None]) ** 2).sum(axis=1) / weights
        variances = np.maximum(variances, 1e-4 * max(values.var(), 1e-12))
        mixing = weights / weights.sum() if prior_weight == 0 else np.full(weights.shape, 1.0 / weights.size)
        mixture = TissueMixture(means, variances, mixing, prior_weight, min_prior)
        responsibilities = mixture.posterior(values, prior)
    if mixture is not None:
        logger.info("EM tissue means %s, sd %s", np.round(mixture.means, 3), np.round(np.sqrt(mixture.variances), 3))
    return mixture


def every_nth_index(mask: np.ndarray, max_voxels: int, slab: int = 16) -> np.ndarray:
    """Flat (raster-order) indices of every n-th True voxel of ``mask`` (z, y, x), n the
    smallest step leaving at most ``max_voxels``: ``flatnonzero(mask)[::n]``, int64,
    without the int64 index of every True voxel (``slab`` slices at a time)."""
    count = int(np.count_nonzero(mask))
    step = max(1, -(-count // max_voxels))
    flat = mask.reshape(mask.shape[0], -1)
    chosen, seen = [], 0
    for start in range(0, flat.shape[0], slab):
        local = np.flatnonzero(flat[start : start + slab])
        first = (-seen) % step  # the next kept voxel's rank within this slab
        chosen.append(local[first::step] + start * flat.shape[1])
        seen += local.size
    return np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)


def group_sums(probabilities: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """(G + 1, N) probabilities summed per group from (K, N) ``probabilities`` and (K,)
    ``groups`` (see :func:`fit_mixture`); ``probabilities`` itself when ``groups`` is None."""
    if groups is None:
        return probabilities
    members = np.arange(int(groups.max()) + 1)[:, None] == groups[None, :]
    return members.astype(probabilities.dtype) @ probabilities


def apply_mixture(
    mixture: TissueMixture | None,
    image: np.ndarray,
    probabilities: np.ndarray,
    mask: np.ndarray,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Post-processed probabilities: inside ``mask`` the mixture's tissue posteriors
    (background 0), outside it background 1. Shapes as :func:`em_refine`; works on any
    sub-block of the volume (``image`` (*S), ``probabilities`` (K, *S), ``mask`` (*S)).
    With ``groups`` (:func:`fit_mixture`), each group's posterior is split among its
    classes in the network's proportions (equally where the network gives the group 0)."""
    out = np.zeros(probabilities.shape, dtype=np.float32)
    out[0] = 1.0
    if mixture is None or not mask.any():
        return out
    out[0, mask] = 0.0
    inside = probabilities[:, mask]
    grouped = group_sums(inside, groups)
    posterior = mixture.posterior(image[mask], grouped[1:])
    if groups is None:
        out[1:, mask] = posterior
        return out
    tissue = groups[1:]
    group_total = grouped[tissue]
    sizes = np.bincount(groups)[tissue][:, None]
    share = np.where(group_total > 1e-12, inside[1:] / np.maximum(group_total, 1e-12), 1.0 / sizes)
    out[1:, mask] = posterior[tissue - 1] * share
    return out


def network_override(
    postprocessed: np.ndarray, probabilities: np.ndarray, mask: np.ndarray, threshold: float
) -> np.ndarray:
    """Inside ``mask``, the network's own probabilities where it is confident (max > ``threshold``)
    and its class differs from the post-processed one; ``postprocessed`` elsewhere.

    For fine-tuned versions (see :mod:`napari_medseg.postprocess.finetuned`): their
    network learned the per-scan mixture's labels plus the corrections, so where it still
    confidently disagrees with the mixture it is mostly because of what it was taught.
    Shapes: (K, *S) both, ``mask`` (*S); works per block. Returns a new array.
    """
    network = np.argmax(probabilities, axis=0)
    confident = probabilities.max(axis=0) > threshold
    take = mask & confident & (network != np.argmax(postprocessed, axis=0))
    out = postprocessed.astype(np.float32, copy=True)
    out[:, take] = probabilities[:, take]
    return out


def em_refine(
    image: np.ndarray,
    probabilities: np.ndarray,
    mask: np.ndarray,
    *,
    iterations: int = 12,
    prior_weight: float = 1.0,
    min_prior: float = 1e-3,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`fit_mixture` then :func:`apply_mixture` on the whole grid (arguments as there).

    Returns:
        (K, z, y, x) float32: inside the mask the tissue posteriors r_k (background 0),
        outside it all probability goes to background.
    """
    mixture = fit_mixture(
        image, probabilities, mask, iterations=iterations, prior_weight=prior_weight, min_prior=min_prior, groups=groups
    )
    return apply_mixture(mixture, image, probabilities, mask, groups)
