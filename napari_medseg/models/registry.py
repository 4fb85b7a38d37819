"""Architectures by name: a config names a registry key, never a dotted import path."""

from __future__ import annotations

import logging

from torch import nn

from ..config import ModelConfig
from .blocks import dropout_modules
from .transunet import TransUNet
from .unet import UNet

__all__ = ["ARCHITECTURES", "build_model", "gradcam_layer_name"]

logger = logging.getLogger(__name__)

#: Registry key -> network class (keyword-only constructor taking ``spatial_dims``,
#: ``in_channels``, ``out_channels`` and its own ``arch_kwargs``).
ARCHITECTURES: dict[str, type[nn.Module]] = {"unet": UNet, "transunet": TransUNet}


def build_model(config: ModelConfig) -> nn.Module:
    """A freshly initialised network for ``config``, with ``model.config = config``.

    The model maps (B, ``config.in_channels``, *S) to logits (B, ``config.num_classes``, *S),
    with ``len(S) == config.spatial_dims``. It is returned in training mode, on the CPU.

    Raises:
        ValueError: unknown architecture (the known ones are listed), arch_kwargs the
            architecture rejects, or ``dropout_sites`` / ``gradcam_layer`` naming no module.
    """
    if not isinstance(config, ModelConfig):
        raise ValueError(f"config {config!r} must be a ModelConfig")
    cls = ARCHITECTURES.get(config.architecture)
    if cls is None:
        raise ValueError(
            f"architecture {config.architecture!r} is unknown; known: {sorted(ARCHITECTURES)}"
        )
    kwargs = config.to_dict()["arch_kwargs"]
    try:
        model = cls(
            spatial_dims=config.spatial_dims,
            in_channels=config.in_channels,
            out_channels=config.num_classes,
            **kwargs,
        )
    except TypeError as err:  # an argument the constructor does not take
        raise ValueError(
            f"arch_kwargs {kwargs!r} do not fit {config.architecture!r}: {err}"
        ) from None
    _check_named_modules(model, config)
    model.config = config
    logger.debug("built %s with %d parameters", config.architecture, _count(model))
    return model


def gradcam_layer_name(model: nn.Module) -> str:
    """The module name Grad-CAM hooks by default: ``model.config.gradcam_layer`` when set,
    else the architecture's ``default_gradcam_layer``, else ``""``."""
    config = getattr(model, "config", None)
    if isinstance(config, ModelConfig) and config.gradcam_layer:
        return config.gradcam_layer
    return getattr(model, "default_gradcam_layer", "")


def _check_named_modules(model: nn.Module, config: ModelConfig) -> None:
    names = dict(model.named_modules())
    for site in config.dropout_sites:
        if site not in names:
            raise ValueError(
                f"dropout_sites entry {site!r} is not a module of {config.architecture!r}"
            )
        if not dropout_modules(model, [site]):
            raise ValueError(
                f"dropout_sites entry {site!r} holds no dropout module; place dropout there "
                "with arch_kwargs 'dropout_sites'"
            )
    if config.gradcam_layer and config.gradcam_layer not in names:
        raise ValueError(
            f"gradcam_layer {config.gradcam_layer!r} is not a module of {config.architecture!r}"
        )


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
