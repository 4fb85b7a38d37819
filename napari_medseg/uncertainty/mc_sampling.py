"""Monte-Carlo dropout sampling: dropout on at the bundle's sites only, the rest in eval mode."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ..models import dropout_modules
from ..models.blocks import ConvBlock
from ..models.unet import EncoderDecoder, UNetDecoder
from .dropout_masks import ReusedMasks
from .samplers import SampleBatch, Sampler, preserved_modes, softmax

logger = logging.getLogger(__name__)

__all__ = ["MCDropoutSampler", "mc_dropout"]


@contextmanager
def mc_dropout(model: nn.Module, sites: Sequence[str], p: float | None = None) -> Iterator[list[nn.Module]]:
    """Eval mode everywhere except the dropout modules inside the named ``sites``.

    Norms (batch norm statistics included) stay in eval mode. ``p`` temporarily overrides
    the dropout probability of those modules. Every module's mode and every ``p`` are
    restored on exit, also on exceptions.

    Yields:
        The switched-on dropout modules.

    Raises:
        ValueError: a site names no module of ``model``, or ``p`` is not in [0, 1).
    """
    if p is not None and not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability {p!r} must be in [0, 1)")
    modules = dropout_modules(model, sites)
    saved_p = [(module, module.p) for module in modules]
    with preserved_modes(model):
        try:
            for module in modules:
                module.train()
                if p is not None:
                    module.p = p
            yield modules
        finally:
            for module, value in saved_p:
                module.p = value


class MCDropoutSampler(Sampler):
    """Monte-Carlo dropout: S stochastic passes with dropout on at the bundle's sites only.

    Args:
        model: a network with ``.config.dropout_sites`` naming modules that hold dropout.
        n_samples: S.
        seed: seeds the dropout masks (reproducible for the same image and batch size).
        p: optional dropout probability used while sampling (the bundle's otherwise).
        sites: optional narrower sites (e.g. ``("decoder.levels.3",)``, the finest decoder
            level); every dropout module they reach must lie in the bundle's sites.

    Cost: when every switched-on dropout module lies inside ``model.decoder`` and the model
    has ``encode``/``decode``, the encoder runs once per batch and only the decoder S times;
    with a U-Net decoder (:class:`~napari_medseg.models.unet.UNetDecoder`, also TransUNet's)
    the leading decoder levels without switched-on dropout run once too, so sampling only
    the finest level costs a fraction of a pass per sample; when that level's only dropout
    is its block's, the block's first convolution runs once as well. The dropout masks are drawn in
    the same order as S full passes, so every path agrees exactly with full forward passes
    for the same seed. Otherwise each sample is a full forward pass.

    Masks: each sample draws one pool per switched-on module and activation shape at its
    first batch and reuses it, rolled by random offsets, for the later batches of the run
    (:mod:`.dropout_masks`: the random numbers had been most of the sampling time).
    """

    method = "mc-dropout"

    def __init__(
        self,
        model: nn.Module,
        n_samples: int = 10,
        *,
        seed: int = 0,
        p: float | None = None,
        sites: Sequence[str] | None = None,
    ) -> None:
        super().__init__([model], n_samples, seed=seed)
        self.model = model
        bundle_sites = tuple(self.config.dropout_sites)
        if not bundle_sites:
            raise ValueError(f"model {self.config.architecture!r} names no dropout_sites; MC dropout needs them")
        allowed = {id(m) for m in dropout_modules(model, bundle_sites)}
        self.sites = bundle_sites if sites is None else tuple(sites)
        modules = dropout_modules(model, self.sites)
        if not modules:
            raise ValueError(f"dropout sites {self.sites} of this model hold no dropout module")
        if any(id(m) not in allowed for m in modules):
            raise ValueError(f"sites {self.sites} reach dropout outside the bundle's dropout_sites {bundle_sites}")
        if p is None and all(module.p == 0 for module in modules):
            logger.warning("dropout probability is 0 at %s: MC-dropout samples will be identical", self.sites)
        self.p = p
        self._masks = ReusedMasks()
        self.decoder_only = self._decoder_only(model, modules)
        self.shared_levels = self._shared_levels(model, modules) if self.decoder_only else 0
        self.split_first_level = bool(self.shared_levels) and self._only_block_dropout(
            model.decoder.levels[self.shared_levels], modules
        )

    @staticmethod
    def _decoder_only(model: nn.Module, modules: list[nn.Module]) -> bool:
        decoder = getattr(model, "decoder", None)
        if decoder is None or not (hasattr(model, "encode") and hasattr(model, "decode")):
            return False
        inside = {id(m) for m in decoder.modules()}
        return all(id(m) in inside for m in modules)

    @staticmethod
    def _shared_levels(model: nn.Module, modules: list[nn.Module]) -> int:
        """Leading U-Net decoder levels without switched-on dropout (0 for other decoders)."""
        decoder = model.decoder
        if type(decoder).forward is not UNetDecoder.forward or type(model).decode is not EncoderDecoder.decode:
            return 0
        stochastic = {id(m) for m in modules}
        for i, level in enumerate(decoder.levels):
            if any(id(m) in stochastic for m in level.modules()):
                return i
        return 0  # dropout only in the head: sample the whole decoder

    @staticmethod
    def _only_block_dropout(level: nn.Module, modules: list[nn.Module]) -> bool:
        """Whether the only switched-on dropout in ``level`` is its block's ``dropout``."""
        block = getattr(level, "block", None)
        if not isinstance(block, ConvBlock) or not hasattr(level, "block_input"):
            return False
        stochastic = {id(m) for m in modules}
        inside = [m for m in level.modules() if id(m) in stochastic]
        return len(inside) == 1 and inside[0] is block.dropout

    def sample_batch(self, x: torch.Tensor) -> SampleBatch:
        model = self.model
        if not self.decoder_only:
            plain = softmax(model(x))
            return SampleBatch(self._samples(lambda: model(x)), plain)
        features = model.encode(x)
        if self.shared_levels:
            decoder, start = model.decoder, self.shared_levels
            *skips, hidden = features
            skips = skips[::-1]  # coarsest first, as the decoder levels consume them
            for level, skip in zip(decoder.levels[:start], skips[:start]):
                hidden = level(hidden, skip)

            first, rest = decoder.levels[start], list(zip(decoder.levels[start + 1 :], skips[start + 1 :]))
            if self.split_first_level:
                # Up to the dropout, the first sampled level is deterministic: compute once.
                pre, residual = first.block.before_dropout(first.block_input(hidden, skips[start]))

                def sampled_level() -> torch.Tensor:
                    return first.block.after_dropout(pre, residual)
            else:

                def sampled_level() -> torch.Tensor:
                    return first(hidden, skips[start])

            def decode() -> torch.Tensor:
                out = sampled_level()
                for level, skip in rest:
                    out = level(out, skip)
                return decoder.head(out)
        else:

            def decode() -> torch.Tensor:
                return model.decode(features)

        plain = softmax(decode())
        return SampleBatch(self._samples(decode), plain)

    def _samples(self, forward) -> torch.Tensor:
        """(S, B, K, *patch): ``forward()`` S times with dropout on at the sites, sample i
        applying the run's masks of sample i (:class:`~.dropout_masks.ReusedMasks`)."""
        samples = []
        with mc_dropout(self.model, self.sites, self.p) as modules, self._masks.installed(modules):
            for i in range(self.n_samples):
                self._masks.sample = i
                samples.append(softmax(forward()))
        return torch.stack(samples)

    def reset(self) -> None:
        super().reset()
        self._masks.clear()
