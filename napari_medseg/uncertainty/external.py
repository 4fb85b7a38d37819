"""Uncertainty of external models (nnU-Net folders, MONAI bundles), sampled their own way.

The model draws the samples (``sample_probabilities``, see
:mod:`napari_medseg.models.external.sampling`), each (K, z, y, x) on the scan's own grid:

- nnU-Net: ``ensemble`` = its folds, each fold's prediction without mirroring (the folds'
  disagreement alone, one pass each); ``tta`` = nnU-Net's mirroring, one sample per
  combination of the checkpoint's allowed axes including the unmirrored one (the folds
  averaged within each, as nnU-Net averages them); ``mc-dropout`` only when the network
  has dropout with p > 0.
- MONAI: ``tta`` = the 8 flips of the roi's spatial axes; ``mc-dropout`` when the network
  has dropout; ``ensemble`` is refused (a bundle is one network).

Only two running sums are kept, of the probabilities and of their entropies, so memory is
that of two volumes of probabilities whatever S; then the decomposition of
:mod:`.decompose` (total = entropy of the mean, aleatoric = mean entropy, epistemic = the
difference, nats). External models have no post-processing. The OOD signals are computed
on the samples' mean, with the epistemic map: the modality, Hounsfield and volume tests,
and the score against the threshold once the model's first scans calibrated it
(:mod:`.ood_first_use`; that threshold comes from plain predictions, not from samples'
means, and sampled runs add nothing to it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..control import ProgressCallback, StopCheck
from ..inference.device import select_device
from ..preprocess import classes_last
from ..types import Volume
from .decompose import entropy, split_entropy
from .ood import assess_ood
from .run import UncertaintyResult

logger = logging.getLogger(__name__)

__all__ = ["external_sample_count", "estimate_external"]


def external_sample_count(models: Sequence[Any], method: str, samples: int = 10) -> int:
    """How many samples ``method`` draws from one external model, checked before any work.

    Raises:
        ExternalModelError: the model cannot sample that way (it says which and why).
        ValueError: an external model given with other models, an unknown method.
    """
    models = list(models)
    if len(models) != 1:
        names = ", ".join(str(getattr(m, "bundle_path", type(m).__name__)) for m in models)
        raise ValueError(f"an external model draws its own samples (an nnU-Net folder's ensemble is its folds) "
                         f"and cannot be combined with other models: {names}")  # fmt: skip
    return models[0].sample_count(method, samples)


def estimate_external(
    volume: Volume,
    models: Sequence[Any],
    *,
    method: str,
    samples: int = 10,
    device: Any = "auto",
    seed: int = 0,
    progress: ProgressCallback = None,
    should_stop: StopCheck = None,
) -> UncertaintyResult:
    """:func:`~napari_medseg.uncertainty.estimate_uncertainty` for one external model.

    Args:
        volume: the scan; the maps lie on its grid.
        models: the one external model (a sequence, as ``estimate_uncertainty`` passes it).
        method: ``"ensemble"``, ``"tta"`` or ``"mc-dropout"`` (see the module docstring).
        samples: S for ``mc-dropout``; ``ensemble`` and ``tta`` draw as many as there are
            folds or flips.
        progress: (done, total) windows (nnU-Net) or window batches (MONAI) over all samples.
        should_stop: checked before every window or window batch.

    Raises:
        Cancelled: ``should_stop()`` returned True.
        ExternalModelError, ValueError: see :func:`external_sample_count`.
    """
    count = external_sample_count(models, method, samples)
    model = models[0]
    torch_device = select_device(device)
    start = time.perf_counter()
    probability_sum, entropy_sum, drawn = _sums(model, volume, method, samples, seed, torch_device, progress, should_stop)
    if drawn != count:
        raise RuntimeError(f"{type(model).__name__} drew {drawn} samples, {count} were announced")
    sampling = time.perf_counter() - start
    mean = probability_sum
    mean /= drawn
    mean_entropy = entropy_sum / drawn
    del entropy_sum
    total, aleatoric, epistemic = split_entropy(entropy(mean, axis=0), mean_entropy)
    ood = assess_ood(mean, model.config, spacing=volume.spacing, scan=volume, epistemic=epistemic)
    timings = {"sampling": sampling, "decompose": time.perf_counter() - start - sampling}
    timings["total"] = time.perf_counter() - start
    logger.info("%s uncertainty (%d samples) of %s with %s in %.1f s", method, drawn, volume.shape,
                model.config.extra.get("external"), timings["total"])  # fmt: skip
    return UncertaintyResult(
        total=total, aleatoric=aleatoric, epistemic=epistemic, mean_probabilities=classes_last(mean), method=method,
        samples=drawn, ood=ood, class_names=tuple(model.config.class_names), timings=timings,
        device=str(torch_device), precision="fp32", postprocessed=False,
    )  # fmt: skip


def _sums(model, volume: Volume, method: str, samples: int, seed: int, device, progress, should_stop):
    """Sum of the samples' probabilities (K, z, y, x) float32, sum of their entropies
    (z, y, x) float64, and how many were drawn; the model's train/eval flags are restored."""
    probability_sum: np.ndarray | None = None
    entropy_sum = np.zeros(volume.shape, dtype=np.float64)
    drawn = 0
    was_training = [(module, module.training) for module in model.modules()]
    try:
        draws = model.sample_probabilities(volume.array, volume.spacing, method=method, samples=samples, seed=seed,
                                           geometry=volume.geometry, device=device, progress=progress,
                                           should_stop=should_stop)  # fmt: skip
        for sample in draws:
            entropy_sum += entropy(sample, axis=0)
            if probability_sum is None:
                probability_sum = np.asarray(sample, dtype=np.float32)  # a fresh array: it becomes the sum
            else:
                probability_sum += sample
            drawn += 1
            del sample
    finally:
        for module, training in was_training:
            module.training = training
    assert probability_sum is not None
    return probability_sum, entropy_sum, drawn
