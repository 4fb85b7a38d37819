"""The post-processing a fine-tuned version carries in its bundle.

A bundle may label tissue with a per-scan intensity mixture (``em_refine``). Earlier brain
models used one that ignored the network (weight 0). A version fine-tuned with
distillation toward the parent's *segmentation* has learned those labels on the annotated
scans, plus the corrections; a prior-free mixture would ignore them. Such a version
therefore lets its network override the mixture where it is confident and disagrees
(``em_refine.network_override`` = :data:`FINETUNED_OVERRIDE`, see
:func:`napari_medseg.postprocess.mixture.network_override`). A mixture with the network as
its prior (the shipped bundles' refinement on request) is left as it is: the version's
network enters its labels through the prior, and overriding as well let the network's
confident errors replace the mixture's better boundaries (dev subject refined, two rounds
of corrections with ``bench/correction_loop.py --refine``, kept toward the parent network's
labels: -0.008 with the override, +0.011 without; kept toward the refined labels the
annotator corrected, as the panel does, +0.021).

Measured with ``bench/correction_loop.py`` on the earlier, prior-free models (dev subject,
simulated strokes on about 0.2% of the brain, 200 steps per round); the README's
correction-loop section has the shipped models' figures. One round on
the same strokes, mean tissue Dice of the labels users get (parent 0.893): the network as
the mixture's prior (weight 1) 0.906 with the U-Net but 0.829 with the TransUNet, whose
fine-tuned network was a worse prior than none; overriding where the network is
confident above 0.7 / 0.8 / 0.9 / 0.95: U-Net 0.905 / 0.916 / 0.919 / 0.912, TransUNet
0.854 / 0.889 / 0.910 / 0.905 (2.9% and 3.1% of the voxels overridden at 0.9).

A network fine-tuned for only a few steps has not learned the scan yet: with the prior
(weight 1), one round gave 0.881 after 20 steps and 0.854 after 60 (0.904 after 200).
Versions trained for fewer than :data:`MIN_STEPS_FOR_OVERRIDE` steps (a short run, or one
stopped early) keep the parent's post-processing.
"""

from __future__ import annotations

from ..config import ModelConfig
from .settings import MixtureSettings, PostprocessSettings

__all__ = ["FINETUNED_OVERRIDE", "MIN_STEPS_FOR_OVERRIDE", "finetuned_config", "mixture_note", "network_override_of"]

FINETUNED_OVERRIDE = 0.9
MIN_STEPS_FOR_OVERRIDE = 150


def finetuned_config(config: ModelConfig, *, anchored: bool, steps: int) -> ModelConfig:
    """``config`` for a fine-tuned version.

    Args:
        config: the fine-tuned model's configuration (the parent's, a grown head included).
        anchored: the model was distilled toward the parent's segmentation on every
            unannotated voxel (see ``distill_target`` of :func:`~napari_medseg.training.finetune.finetune`).
        steps: optimizer steps taken (the override is given from :data:`MIN_STEPS_FOR_OVERRIDE`).

    Returns:
        ``config`` itself, or a copy whose intensity mixture is overridden where the
        network is more confident than :data:`FINETUNED_OVERRIDE`.
    """
    settings = PostprocessSettings.offered(config)
    mixture = settings.mixture
    if not anchored or steps < MIN_STEPS_FOR_OVERRIDE or mixture is None or mixture.network_override is not None:
        return config
    if mixture.prior_weight > 0:  # the version's network already enters the labels as the prior
        return config
    return with_postprocess(config, settings.with_override(FINETUNED_OVERRIDE))


def with_postprocess(config: ModelConfig, settings: PostprocessSettings) -> ModelConfig:
    """A copy of ``config`` carrying ``settings`` as its post-processing."""
    data = config.to_dict()
    data["extra"] = {**(data.get("extra") or {}), "postprocess": settings.to_dict()}
    return ModelConfig.from_dict(data)


def _mixture(config: ModelConfig) -> MixtureSettings | None:
    return PostprocessSettings.offered(config).mixture


def network_override_of(config: ModelConfig) -> float | None:
    """The mixture's ``network_override`` threshold, or None (no mixture, or no override)."""
    mixture = _mixture(config)
    return None if mixture is None else mixture.network_override


def mixture_note(parent: ModelConfig, version: ModelConfig, *, anchored: bool, steps: int) -> str | None:
    """One sentence for the user on how the version's tissue labels relate to its network,
    or None when there is nothing to say (no mixture, or the same as the parent's)."""
    mixture = _mixture(version)
    if mixture is None or mixture.on_request:  # labels without the mixture unless the user refines
        return None
    before, after = network_override_of(parent), network_override_of(version)
    if after is not None and before is None:
        return (
            f"where this version's network is confident (p > {after:g}) and disagrees with the per-scan "
            "intensity mixture, its class now wins: the corrections reach the labels"
        )
    if after is not None or mixture.prior_weight > 0:
        return None
    if anchored and steps < MIN_STEPS_FOR_OVERRIDE:
        return (
            f"only {steps} steps (fewer than {MIN_STEPS_FOR_OVERRIDE}): the tissue labels still come from the per-scan "
            "intensity mixture alone, so the corrections will not show in them; fine-tune longer"
        )
    return "the tissue labels still come from the per-scan intensity mixture alone (the network only names the classes)"
