"""Architectures by name: a config names a registry key, never a dotted import path."""

from __future__ import annotations

import logging

from torch import nn

from ..config import ModelConfig
from .blocks import dropout_modules
from .transunet import TransUNet
from .unet import UNet

__all__ = ["ARCHITECTURES", "build_model", "check_network_size", "gradcam_layer_name", "parameter_count"]

logger = logging.getLogger(__name__)

#: Registry key -> network class (keyword-only constructor taking ``spatial_dims``,
#: ``in_channels``, ``out_channels`` and its own ``arch_kwargs``).
ARCHITECTURES: dict[str, type[nn.Module]] = {"unet": UNet, "transunet": TransUNet}

#: Bytes one parameter takes while training: float32 weight, gradient and two AdamW moments.
BYTES_PER_PARAMETER = 16


def build_model(config: ModelConfig) -> nn.Module:
    """A freshly initialised network for ``config``, with ``model.config = config``.

    The model maps (B, ``config.in_channels``, *S) to logits (B, ``config.num_classes``, *S),
    with ``len(S) == config.spatial_dims``. It is returned in training mode, on the CPU.

    Raises:
        ValueError: unknown architecture (the known ones are listed), arch_kwargs the
            architecture rejects, a network too large for this machine
            (:func:`check_network_size`), or ``dropout_sites`` / ``gradcam_layer`` naming
            no module.
    """
    if not isinstance(config, ModelConfig):
        raise ValueError(f"config {config!r} must be a ModelConfig")
    cls = ARCHITECTURES.get(config.architecture)
    if cls is None:
        raise ValueError(
            f"architecture {config.architecture!r} is unknown; known: {sorted(ARCHITECTURES)}"
        )
    check_network_size(config)
    model = _construct(cls, config)
    _check_named_modules(model, config)
    model.config = config
    logger.debug("built %s with %d parameters", config.architecture, _count(model))
    return model


def parameter_count(config: ModelConfig) -> int:
    """Parameters of the network ``config`` describes, counted on torch's meta device
    (shapes only: nothing is allocated, whatever the config asks for).

    Raises:
        ValueError: as :func:`build_model` for an unknown architecture or bad arch_kwargs.
    """
    import torch

    cls = ARCHITECTURES.get(config.architecture)
    if cls is None:
        raise ValueError(f"architecture {config.architecture!r} is unknown; known: {sorted(ARCHITECTURES)}")
    with torch.device("meta"):
        return _count(_construct(cls, config))


def check_network_size(config: ModelConfig) -> int:
    """Refuse, before anything is allocated, a network whose training state cannot fit.

    The bound is :data:`BYTES_PER_PARAMETER` (weights, gradients and two optimizer moments
    in float32) per parameter against the memory the machine can give, through the same
    gate as every large array (:func:`~napari_medseg.io.limits.check_allocation`).

    Returns:
        The parameter count.

    Raises:
        ValueError: naming the architecture, the sizes that set the count, and the bytes.
    """
    from ..io.limits import AllocationError, available_memory_bytes, check_allocation, format_bytes

    count = parameter_count(config)
    try:
        check_allocation("network", (count,), BYTES_PER_PARAMETER, f"config of {config.architecture!r}")
    except AllocationError as exc:
        sizes = f"in_channels {config.in_channels}, {config.num_classes} classes, arch_kwargs {config.to_dict()['arch_kwargs']}"
        raise ValueError(
            f"{config.architecture!r} with {sizes} has {count:,} parameters, {format_bytes(exc.n_bytes)} to train "
            f"({BYTES_PER_PARAMETER} bytes each): more than this machine can hold "
            f"({format_bytes(available_memory_bytes())} available)"
        ) from None
    return count


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


def _construct(cls: type[nn.Module], config: ModelConfig) -> nn.Module:
    kwargs = config.to_dict()["arch_kwargs"]
    try:
        return cls(spatial_dims=config.spatial_dims, in_channels=config.in_channels, out_channels=config.num_classes, **kwargs)
    except TypeError as err:  # an argument the constructor does not take
        raise ValueError(f"arch_kwargs {kwargs!r} do not fit {config.architecture!r}: {err}") from None


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
