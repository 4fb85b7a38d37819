"""Post-processing of brain-tissue probabilities on the model grid.

1. ``largest_component``: the brain is one connected piece; tissue outside the largest
   3D connected component of the predicted foreground (and holes inside it) is fixed.
2. ``em_refine``: per-scan intensity model, as SPM and FSL FAST do. Inside the brain
   mask, the network's tissue posteriors act as a spatial prior and a Gaussian per
   tissue class is fitted to this scan's intensities by expectation-maximisation:

       r_k(x) ∝ prior_k(x)^w · N(I(x); mu_k, sigma_k^2)

   The network decides where the brain is and roughly which tissue; the scan's own
   intensities sharpen the tissue boundaries. Both steps are recorded in the bundle's
   ``extra["postprocess"]`` and can be switched off.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a boolean (z, y, x) mask, holes filled."""
    labelled, count = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if count == 0:
        return mask.copy()
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    kept = labelled == int(np.argmax(sizes))
    return ndimage.binary_fill_holes(kept)


def em_refine(
    image: np.ndarray,
    probabilities: np.ndarray,
    mask: np.ndarray,
    *,
    iterations: int = 12,
    prior_weight: float = 1.0,
    min_prior: float = 1e-3,
) -> np.ndarray:
    """Refine tissue posteriors inside ``mask`` with a per-scan Gaussian mixture.

    Args:
        image: (z, y, x) float32 normalised intensities.
        probabilities: (K, z, y, x) network probabilities, class 0 background.
        mask: (z, y, x) bool, where tissue is (the brain).
        iterations: EM iterations.
        prior_weight: exponent w of the network prior.

    Returns:
        (K, z, y, x) float32: background probability as the network's, tissue
        probabilities = (1 - p_background) · r_k inside the mask; outside the mask all
        probability goes to background.
    """
    k = probabilities.shape[0]
    out = np.zeros_like(probabilities, dtype=np.float32)
    out[0] = 1.0
    if not mask.any() or k < 2:
        return out
    values = image[mask].astype(np.float64)
    background = probabilities[0][mask].astype(np.float64)
    prior = probabilities[1:, mask].astype(np.float64)
    prior = np.maximum(prior / np.maximum(prior.sum(axis=0, keepdims=True), 1e-12), min_prior)
    log_prior = prior_weight * np.log(prior)

    responsibilities = prior / prior.sum(axis=0, keepdims=True)
    for _ in range(iterations):
        weights = responsibilities.sum(axis=1) + 1e-9
        means = (responsibilities @ values) / weights
        variances = (responsibilities * (values[None] - means[:, None]) ** 2).sum(axis=1) / weights
        variances = np.maximum(variances, 1e-4 * max(values.var(), 1e-12))
        log_likelihood = -0.5 * ((values[None] - means[:, None]) ** 2 / variances[:, None] + np.log(variances)[:, None])
        logits = log_prior + log_likelihood
        logits -= logits.max(axis=0, keepdims=True)
        responsibilities = np.exp(logits)
        responsibilities /= responsibilities.sum(axis=0, keepdims=True)
    logger.info("EM tissue means %s, sd %s", np.round(means, 3), np.round(np.sqrt(variances), 3))

    out[0, mask] = background
    out[1:, mask] = (1.0 - background)[None] * responsibilities
    return out
