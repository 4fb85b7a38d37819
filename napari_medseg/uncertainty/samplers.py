"""Samplers: S predictions per input, as class probabilities (S, K, *spatial).

Every sampler walks a prepared (model-grid) image the way plain inference does — 2D models
slice-batched through the same context stacking as
:func:`~napari_medseg.inference.engine.predict_slices`, 3D models through Gaussian-blended
sliding windows — and differs from the others in one overridable step,
:meth:`Sampler.sample_batch`, which turns one network input batch (B, C, *patch) into S
probability maps (S, B, K, *patch) plus the plain (deterministic) prediction of the first
model:

- :class:`~napari_medseg.uncertainty.mc_sampling.MCDropoutSampler`: dropout switched on
  only at the bundle's ``dropout_sites``; when they all lie in the decoder the encoder runs
  once per batch and only the decoder is sampled.
- :class:`~napari_medseg.uncertainty.tta.TTASampler`: flips of the in-plane axes and small
  gamma/scale perturbations of the normalised intensities, each prediction flipped back.
- :class:`EnsembleSampler` (here): one sample per model.

:meth:`Sampler.chunks` yields the per-batch samples for memory-bounded accumulation (see
:mod:`napari_medseg.uncertainty.run`); :meth:`Sampler.sample` stacks them for a whole (small)
image. Models are left as found: every module's train/eval flag and every dropout ``p`` are
restored, also when an exception interrupts sampling; randomness comes from the sampler's
own seeded state, never from (or into) the process-wide generator.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..control import ProgressCallback, StopCheck
from ..inference.device import channels_last, nhwc
from ..inference.engine import class_probabilities
from ..inference.tiling import Tiles, restrict_tiles, slice_tiles, traverse, window_tiles
from ..models.seeded_random import SeededRandom

__all__ = ["Chunk", "EnsembleSampler", "SampleBatch", "Sampler", "check_compatible", "preserved_modes"]


@contextmanager
def preserved_modes(*models: nn.Module, set_eval: bool = True) -> Iterator[None]:
    """Put ``models`` in eval mode (when ``set_eval``); restore every module's own flag on exit."""
    saved = [(module, module.training) for model in models for module in model.modules()]
    try:
        if set_eval:
            for model in models:
                model.eval()
        yield
    finally:
        for module, training in saved:
            module.training = training


@dataclass
class SampleBatch:
    """What :meth:`Sampler.sample_batch` returns for one input batch.

    Attributes:
        probabilities: (S, B, K, *patch) float32 softmax probabilities.
        plain: (B, K, *patch) float32, the deterministic eval-mode prediction of the first
            model (the OOD score is computed on it, whatever the sampler).
    """

    probabilities: torch.Tensor
    plain: torch.Tensor


@dataclass
class Chunk:
    """One processed part of the image, on the model grid.

    Attributes:
        region: index of the part in the (z, y, x) image (slices along z for 2D models,
            a window for 3D models).
        weight: Gaussian blending weights of the window (shape of the region), or None when
            the region is written exactly once (2D slices).
        probabilities: (S, K, *region) float32 tensor (on the sampling device).
        plain: (K, *region) float32 tensor.
    """

    region: tuple[slice, ...]
    weight: np.ndarray | None
    probabilities: torch.Tensor
    plain: torch.Tensor


def softmax(logits: torch.Tensor | tuple) -> torch.Tensor:
    """Logits (B, K, *S) -> float32 probabilities over K, as plain inference computes them
    (:func:`~napari_medseg.inference.engine.class_probabilities`)."""
    if isinstance(logits, tuple):  # deep supervision in training mode: the first is the output
        logits = logits[0]
    return class_probabilities(logits)


class Sampler:
    """Base of the samplers; subclasses override :meth:`sample_batch` only.

    Args:
        models: the networks (each with a ``.config``); all must share class names and
            input grid (spatial dims, orientation, spacing, context offsets).
        n_samples: S, samples per voxel.
        seed: seeds the sampler's private random state (reset at every run).
    """

    method = "base"

    def __init__(self, models: Sequence[nn.Module], n_samples: int, *, seed: int = 0) -> None:
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples {n_samples!r} must be a positive int")
        models = list(models)
        if not models:
            raise ValueError("a sampler needs at least one model")
        for model in models:
            if getattr(model, "config", None) is None:
                raise ValueError(f"model {type(model).__name__} has no .config (load it with load_model)")
        check_compatible(models)
        self.models = models
        self.n_samples = n_samples
        self.seed = int(seed)
        self.config = models[0].config
        self._random = SeededRandom(self.seed)

    # the override point -------------------------------------------------------------
    def sample_batch(self, x: torch.Tensor) -> SampleBatch:
        """(B, C, *patch) network input -> S probability maps and the plain prediction."""
        raise NotImplementedError

    # shared machinery -----------------------------------------------------------------
    def private_rng(self, device: torch.device):
        """A context running under the sampler's own seeded torch state
        (:class:`~napari_medseg.models.seeded_random.SeededRandom`); the global state is
        left as found."""
        return self._random.active(device)

    def reset(self) -> None:
        """Start the random state again from ``seed`` (done at the start of every run)."""
        self._random.reset()

    def chunks(
        self,
        image: np.ndarray,
        *,
        device: torch.device = torch.device("cpu"),
        amp: torch.dtype | None = None,
        batch_size: int | None = None,
        overlap: float = 0.5,
        progress: ProgressCallback = None,
        should_stop: StopCheck = None,
        within: np.ndarray | None = None,
    ) -> Iterator[Chunk]:
        """Sample the whole (z, y, x) model-grid ``image`` part by part (with ``within``,
        (z, y, x) bool, only the batches holding some of it: see
        :func:`~napari_medseg.inference.tiling.restrict_tiles`).

        Args:
            image: (z, y, x) float32, normalised (``prepare(...).image``).
            batch_size: slices (2D) or windows (3D) per network input batch; defaults 8 / 2.
            overlap: window overlap for 3D models.

        Yields:
            :class:`Chunk` objects, each processed under ``torch.inference_mode``.

        Raises:
            Cancelled: ``should_stop()`` returned True before a batch.
        """
        self.reset()
        volume = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        for model in self.models:
            model.to(device)
        tiles = restrict_tiles(self.tiles(tuple(volume.shape), batch_size, overlap), within)

        def run_batch(inputs: torch.Tensor, regions) -> SampleBatch:
            with torch.inference_mode(), self.private_rng(device):
                with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                    return self.sample_batch(nhwc(inputs.to(device)))

        with preserved_modes(*self.models), channels_last(*self.models):
            for regions, out in traverse(volume, tiles, run_batch, progress=progress, should_stop=should_stop):
                if tiles.offsets is not None:  # (S, B, K, H, W) -> (S, K, B, H, W): slices become the region's z axis
                    yield Chunk(regions[0], None, out.probabilities.transpose(1, 2), out.plain.transpose(0, 1))
                    continue
                for i, region in enumerate(regions):
                    yield Chunk(region, tiles.weight, out.probabilities[:, i], out.plain[i])

    def tiles(self, shape: tuple[int, ...], batch_size: int | None, overlap: float) -> Tiles:
        """How the image is cut: slabs of 8 slices (2D) or windows of the config's patch,
        at most the image, 2 per batch (3D), unless ``batch_size`` says otherwise."""
        if self.config.spatial_dims == 2:
            return slice_tiles(shape[0], batch_size or 8, self.config.context_offsets)
        patch = tuple(min(p, s) for p, s in zip(tuple(self.config.patch_size) or shape, shape))
        return window_tiles(shape, patch, overlap, batch_size or 2)

    def sample(self, image: np.ndarray, **kwargs) -> np.ndarray:
        """All S samples over a whole (z, y, x) model-grid image: (S, K, z, y, x) float32.

        Holds every sample at once: meant for small images and checks; whole volumes go
        through :func:`~napari_medseg.uncertainty.estimate_uncertainty`, which accumulates.
        Keyword arguments are those of :meth:`chunks`.
        """
        out: np.ndarray | None = None
        weights = np.zeros(image.shape, dtype=np.float32)
        for chunk in self.chunks(image, **kwargs):
            probabilities = chunk.probabilities.float().cpu().numpy()
            if out is None:
                out = np.zeros((*probabilities.shape[:2], *image.shape), dtype=np.float32)
            index = (slice(None), slice(None), *chunk.region)
            if chunk.weight is None:
                out[index] = probabilities
                weights[chunk.region] = 1.0
            else:
                out[index] += probabilities * chunk.weight
                weights[chunk.region] += chunk.weight
        assert out is not None
        return out / weights


class EnsembleSampler(Sampler):
    """One sample per model (e.g. a U-Net and a TransUNet, or fine-tuned versions).

    The first model is the reference: its grid and its plain prediction (for the OOD score)
    are used. All models must share class names and input grid.
    """

    method = "ensemble"

    def __init__(self, models: Sequence[nn.Module], *, seed: int = 0) -> None:
        models = list(models)
        super().__init__(models, len(models), seed=seed)

    def sample_batch(self, x: torch.Tensor) -> SampleBatch:
        samples = [softmax(model(x)) for model in self.models]
        return SampleBatch(torch.stack(samples), samples[0])


def check_compatible(models: Sequence[nn.Module]) -> None:
    """Raise ValueError naming the difference unless all models share classes and input grid."""
    first = models[0].config
    for i, model in enumerate(models[1:], start=1):
        config = model.config
        if tuple(config.class_names) != tuple(first.class_names):
            raise ValueError(
                f"model {i} has classes {tuple(config.class_names)} but model 0 has {tuple(first.class_names)}; "
                "an ensemble needs the same classes in the same order"
            )
        for name in ("spatial_dims", "canonical_orientation", "target_spacing", "in_channels"):
            a, b = getattr(first, name), getattr(config, name)
            if tuple(np.atleast_1d(a)) != tuple(np.atleast_1d(b)):
                raise ValueError(f"model {i} has {name} {b!r} but model 0 has {a!r}; models must share the input grid")
        if first.spatial_dims == 2 and config.context_offsets != first.context_offsets:
            raise ValueError(
                f"model {i} stacks slices {config.context_offsets} but model 0 stacks {first.context_offsets}"
            )
