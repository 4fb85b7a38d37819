"""Whole-volume uncertainty: sample, accumulate per batch, decompose, map back to the scan.

Memory stays bounded whatever the sample count: the S samples of one batch of slices (or
one window batch) are reduced at once to their mean probabilities and mean entropy, and
only these two running maps, plus the plain prediction used for the OOD score, are kept
over the volume. No array of S full-volume samples ever exists.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..control import ProgressCallback, StopCheck
from ..inference.device import autocast_dtype, precision_name, select_device
from ..inference.engine import predict_probabilities
from ..inference.locator import LocatorSettings, find_brain
from ..postprocess import PostprocessFit, PostprocessSettings, fit_postprocess
from ..preprocess import Prepared, prepare_for_model, restore
from ..types import Volume
from .decompose import entropy, moments, split_entropy
from .ood import OODResult, assess_ood
from .mc_sampling import MCDropoutSampler
from .samplers import EnsembleSampler, Sampler
from .tta import TTASampler

logger = logging.getLogger(__name__)

METHODS = ("mc-dropout", "tta", "ensemble")

__all__ = ["METHODS", "UncertaintyResult", "estimate_uncertainty", "make_sampler"]


@dataclass
class UncertaintyResult:
    """Uncertainty maps on the input's own grid (the scan's geometry), in nats.

    Attributes:
        total: (z, y, x) float32, entropy of the mean prediction.
        aleatoric: (z, y, x) float32, mean entropy of the samples.
        epistemic: (z, y, x) float32, mutual information; ``total == aleatoric + epistemic``.
        mean_probabilities: (z, y, x, K) float32, the mean of the samples.
        method: ``"mc-dropout"``, ``"tta"`` or ``"ensemble"``, what produced the samples.
        samples: S, samples per voxel.
        ood: the image-level out-of-distribution assessment (see :mod:`.ood`).
        class_names: K names, background first.
        timings: seconds per stage ("preprocess", "locator" when the model has one, "sampling",
            "postprocess", "restore", "total").
        device, precision: where and how the networks ran.
        postprocessed: whether the samples went through the bundle's post-processing.
        locator: what the model's brain locator found (its bundle, brain and mask volume in
            mL, whether the scan looked brain-extracted; see
            :func:`~napari_medseg.inference.locator.locate_brain`), or None without one.
    """

    total: np.ndarray
    aleatoric: np.ndarray
    epistemic: np.ndarray
    mean_probabilities: np.ndarray
    method: str
    samples: int
    ood: OODResult
    class_names: tuple[str, ...]
    timings: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"
    precision: str = "fp32"
    postprocessed: bool = False
    locator: dict[str, Any] | None = None

    @property
    def labels(self) -> np.ndarray:
        """(z, y, x) uint8 arg-max of the mean probabilities (post-processed samples when
        :attr:`postprocessed`)."""
        return np.argmax(self.mean_probabilities, axis=-1).astype(np.uint8)

    def report(self) -> dict[str, Any]:
        """Method, sample count, OOD assessment and timings as JSON-ready data."""
        return {
            "method": self.method,
            "samples": self.samples,
            "postprocessed": self.postprocessed,
            "ood": self.ood.as_dict(),
            "timings": dict(self.timings),
            "device": self.device,
            "precision": self.precision,
            **({"locator": self.locator} if self.locator is not None else {}),
        }


def make_sampler(
    method: str,
    models: Sequence[nn.Module],
    samples: int = 10,
    *,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
) -> Sampler:
    """The sampler for ``method``; ``mc-dropout`` and ``tta`` take exactly one model.

    For ``ensemble`` the sample count is the number of models (``samples`` is ignored).
    ``options`` are further keyword arguments of the sampler class, e.g. ``{"sites":
    ("decoder.levels.3",)}`` for :class:`MCDropoutSampler` or ``{"log_gamma": 0.1}`` for
    :class:`TTASampler`.
    """
    models = list(models)
    options = dict(options or {})
    if method not in METHODS:
        raise ValueError(f"method {method!r} must be one of {METHODS}")
    if method == "ensemble":
        if len(models) < 2:
            raise ValueError(f"an ensemble needs at least 2 models, got {len(models)}")
        return EnsembleSampler(models, seed=seed, **options)
    if len(models) != 1:
        raise ValueError(f"method {method!r} takes one model, got {len(models)}")
    cls = MCDropoutSampler if method == "mc-dropout" else TTASampler
    return cls(models[0], samples, seed=seed, **options)


def estimate_uncertainty(
    volume: Volume,
    model_or_models: nn.Module | Sequence[nn.Module],
    *,
    method: str = "mc-dropout",
    samples: int = 10,
    device: str | torch.device | None = "auto",
    precision: str = "auto",
    batch_size: int | None = None,
    seed: int = 0,
    sampler_options: Mapping[str, Any] | None = None,
    postprocessing: bool = True,
    refine: bool = False,
    progress: ProgressCallback = None,
    should_stop: StopCheck = None,
) -> UncertaintyResult:
    """Sample a model (or an ensemble) over ``volume`` and decompose its uncertainty.

    Args:
        volume: the scan (any storage orientation and spacing).
        model_or_models: a network with ``.config`` (``load_model``), or a sequence of them
            (an ensemble; the first is the reference for the grid and the OOD threshold).
        method: ``"mc-dropout"``, ``"tta"`` or ``"ensemble"``.
        samples: S for MC dropout and TTA; an ensemble draws one sample per model.
        device, precision: as :func:`~napari_medseg.inference.segment`.
        batch_size: slices (2D) or windows (3D) per network batch.
        seed: seeds dropout masks and augmentations (same seed, same maps).
        sampler_options: further sampler arguments (see :func:`make_sampler`).
        postprocessing: pass every sample through the bundle's post-processing (decided once
            per scan as :func:`~napari_medseg.inference.segment` does): the maps describe the
            labels the user gets. A mixture with the network as its prior refines each
            sample with its own prior; a prior-free one gives every sample the same tissue
            posterior (epistemic part zero there). False: the network's own samples.
        refine: also the bundle's steps kept on request, as ``segment``'s ``refine``.
        progress: called with (done, total) batches.
        should_stop: checked before every batch.

    Returns:
        :class:`UncertaintyResult` on the input grid. On the model grid the maps are exact
        per voxel; after resampling (when the scan's spacing differs from the model's),
        total is the entropy of the resampled mean probabilities and aleatoric the
        resampled mean entropy (capped at total), so the identity still holds exactly.
        With ``postprocessing`` and a prior-free mixture, the mean's arg-max is ``segment``'s labels.

    Raises:
        Cancelled: ``should_stop()`` returned True.
        ValueError: unknown method, wrong model count, incompatible ensemble members.
        ExternalModelError: an nnU-Net folder or MONAI bundle that cannot sample so (:mod:`.external`).
    """
    from ..models.external import is_external
    from .external import estimate_external

    models = list(model_or_models) if isinstance(model_or_models, Sequence) else [model_or_models]
    if any(is_external(member) for member in models):  # no precision, batches, options, post-processing
        return estimate_external(volume, models, method=method, samples=samples, device=device, seed=seed,
                                 progress=progress, should_stop=should_stop)  # fmt: skip
    sampler = make_sampler(method, models, samples, seed=seed, options=sampler_options)
    config = sampler.config
    torch_device = select_device(device)
    amp = autocast_dtype(torch_device, precision)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    prepared = prepare_for_model(volume, config)
    timings["preprocess"] = time.perf_counter() - start

    settings = PostprocessSettings.from_config(config, postprocessing, refine=refine)
    run = dict(device=torch_device, amp=amp, batch_size=batch_size, progress=progress, should_stop=should_stop)
    mean, mean_entropy, ood, postprocessed, located = _moments(volume, sampler, prepared, settings, timings, **run)
    mark = time.perf_counter()
    mean_probabilities = restore(mean, prepared)
    del mean
    total, aleatoric, epistemic = split_entropy(entropy(mean_probabilities, axis=-1), prepared.to_input_grid(mean_entropy))
    timings["restore"] = time.perf_counter() - mark
    timings["total"] = time.perf_counter() - start
    logger.info("%s uncertainty (%d samples) of %s in %.1f s", method, sampler.n_samples, volume.shape, timings["total"])
    return UncertaintyResult(
        total=total, aleatoric=aleatoric, epistemic=epistemic, mean_probabilities=mean_probabilities, method=method,
        samples=sampler.n_samples, ood=ood, class_names=tuple(config.class_names), timings=timings,
        device=str(torch_device), precision=precision_name(amp), postprocessed=postprocessed, locator=located,
    )  # fmt: skip


def _moments(volume: Volume, sampler: Sampler, prepared: Prepared, settings: PostprocessSettings,
             timings: dict[str, float], *, device, amp, batch_size, progress, should_stop):  # fmt: skip
    """Mean probabilities (K, z, y, x) and mean entropy (z, y, x) of the (post-processed)
    samples on the model grid, the OOD assessment, whether they were post-processed, and
    what the locator found (None without one)."""
    brain, found = find_brain(sampler.models[0], prepared.image, prepared.geometry, device, timings)
    if found is not None:
        found = {"bundle": LocatorSettings.from_config(sampler.config).bundle, **found}
    fit = None
    if settings.sample_dependent:
        # The tissue posterior depends on each sample (network prior weight > 0): decide
        # mask and mixture on a plain pass first, then post-process every sample.
        mark = time.perf_counter()
        plain_first = predict_probabilities(sampler.models[0], prepared.image, device=device, amp=amp,
                                            batch_size=batch_size, should_stop=should_stop, within=brain)  # fmt: skip
        fit = fit_postprocess(prepared.image, plain_first, settings, geometry=prepared.geometry, brain=brain)
        del plain_first
        timings["postprocess_fit"] = time.perf_counter() - mark

    mark = time.perf_counter()
    transform = None if fit is None else _sample_transform(fit, prepared.image)
    mean, mean_entropy, plain = _accumulate(sampler, prepared.image, device, amp, batch_size, progress, should_stop, transform,
                                            within=brain)  # fmt: skip
    timings["sampling"] = time.perf_counter() - mark

    mark = time.perf_counter()
    ood = _assess(volume, sampler.config, prepared, plain, None if fit is not None else (mean, mean_entropy), brain)
    if fit is None and (settings or brain is not None):
        # A fixed mask and a prior-free mixture treat every sample alike: exact on the moments.
        fit = fit_postprocess(prepared.image, plain, settings, geometry=prepared.geometry, brain=brain)
        mean, mean_entropy = _postprocess_moments(fit, prepared.image, mean, mean_entropy)
    del plain
    timings["postprocess"] = time.perf_counter() - mark
    return mean, mean_entropy, ood, bool(settings) or brain is not None, found


def _assess(volume: Volume, config, prepared: Prepared, plain: np.ndarray, network_moments,
            brain: np.ndarray | None) -> OODResult:  # fmt: skip
    """The OOD assessment of the plain prediction on the scan's voxels (not the air around
    it); ``network_moments`` (mean, mean entropy) of the network's own samples, when they
    were not post-processed, let it see the epistemic part too; the brain-volume test
    counts the voxels inside ``brain`` (the locator's mask) when there is one."""
    epistemic = None
    if network_moments is not None:
        mean, mean_entropy = network_moments
        _, _, epistemic = split_entropy(entropy(mean, axis=0), mean_entropy)
        epistemic = prepared.scan_part(epistemic)
    return assess_ood(prepared.scan_part(plain), config, spacing=prepared.geometry.spacing, scan=volume,
                      epistemic=epistemic, within=prepared.scan_part(brain))  # fmt: skip


def _accumulate(
    sampler: Sampler,
    image: np.ndarray,
    device: torch.device,
    amp: torch.dtype | None,
    batch_size: int | None,
    progress: ProgressCallback,
    should_stop: StopCheck,
    transform: Callable[[torch.Tensor, tuple[slice, ...]], torch.Tensor] | None = None,
    within: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean probabilities (K, z, y, x), mean entropy (z, y, x) and plain prediction (K, z, y, x).

    ``within`` ((z, y, x) bool, the brain the model's locator found): only the batches of
    slices or windows holding some of it are sampled; the voxels no batch reaches are
    certain background in every sample (mean and plain 1 for class 0, entropy 0), as the
    locator's mask then makes them anyway.

    ``transform(samples (S, K, *block), region)``, if given, maps each chunk's samples
    (post-processing) before they are reduced; the plain prediction stays the network's.

    Each chunk's S samples are reduced on the sampling device right away; 3D windows are
    blended with their Gaussian weights (so the mean entropy of overlapping windows is the
    blend of their per-window mean entropies).
    """
    k = sampler.config.num_classes
    mean, plain = np.zeros((k, *image.shape), dtype=np.float32), np.zeros((k, *image.shape), dtype=np.float32)
    mean_entropy = np.zeros(image.shape, dtype=np.float32)
    weights: np.ndarray | None = None
    reached = np.zeros(image.shape, bool) if within is not None else None
    chunks = sampler.chunks(
        image, device=device, amp=amp, batch_size=batch_size, progress=progress, should_stop=should_stop, within=within
    )
    with closing(chunks):
        for chunk in chunks:
            samples = chunk.probabilities if transform is None else transform(chunk.probabilities, chunk.region)
            chunk_mean, chunk_entropy = (t.float().cpu().numpy() for t in moments(samples))
            chunk_plain = chunk.plain.float().cpu().numpy()
            index = (slice(None), *chunk.region)
            if reached is not None:
                reached[chunk.region] = True
            if chunk.weight is None:
                mean[index] = chunk_mean
                plain[index] = chunk_plain
                mean_entropy[chunk.region] = chunk_entropy
                continue
            if weights is None:
                weights = np.zeros(image.shape, dtype=np.float32)
            mean[index] += chunk_mean * chunk.weight
            plain[index] += chunk_plain * chunk.weight
            mean_entropy[chunk.region] += chunk_entropy * chunk.weight
            weights[chunk.region] += chunk.weight
    if weights is not None:
        weights[weights == 0] = 1.0  # voxels no window reached (outside ``within``)
        mean /= weights
        plain /= weights
        mean_entropy /= weights
    if reached is not None:
        untouched = ~reached
        mean[0][untouched] = plain[0][untouched] = 1.0
    return mean, mean_entropy, plain


def _sample_transform(fit: PostprocessFit, image: np.ndarray):
    """Per-chunk post-processing of (S, K, *block) sample probabilities (torch)."""

    def transform(samples: torch.Tensor, region: tuple[slice, ...]) -> torch.Tensor:
        block = image[region]
        values = samples.float().cpu().numpy()
        out = np.stack([fit.apply(block, sample, region) for sample in values])
        return torch.from_numpy(out).to(samples.device)

    return transform


def _postprocess_moments(
    fit: PostprocessFit, image: np.ndarray, mean: np.ndarray, mean_entropy: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Moments of the post-processed samples from those of the network samples, when the
    post-processing is the same for every sample (no network prior in the mixture).

    Outside the mask every sample is background (entropy 0); inside it a prior-free
    mixture gives every sample the same posterior r, so the mean is r and the mean
    entropy H(r); a mask alone leaves the samples, and so their moments, unchanged.
    """
    processed = fit.apply(image, mean)
    if fit.em:
        return processed, entropy(processed, axis=0)
    inside = fit.mask if fit.mask is not None else np.ones(image.shape, bool)
    return processed, np.where(inside, mean_entropy, 0.0).astype(np.float32)
