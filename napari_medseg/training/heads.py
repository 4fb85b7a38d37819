"""Growing a model's output head for classes its parent did not know.

The head is found generically: a network built from the same config with K + n classes
instead of K differs from the K-class network exactly in the parameters that produce
logits (the final 1x1 convolution ``decoder.head`` of U-Net and TransUNet, and any
deep-supervision ``decoder.aux_heads``). :func:`head_parameters` names them by comparing the
two state dicts; nothing depends on module names or on ``out_channels`` (a hidden layer may
have K channels by chance: the tiny test U-Net has 4 features and 4 classes).

Initialisation of a new class's channel (documented choice): the mean of the existing
classes' rows of the weight, plus 1% Gaussian noise (so several new classes differ), with
the bias set to the mean of the old biases minus :data:`NEW_CLASS_BIAS_OFFSET`. The new
logit then starts as the average of the old logits lowered by 3, below the largest old
logit everywhere (up to the 1% noise): the grown model segments like its parent, but the
new class's probability is not vanishingly small, so its strokes give it a useful gradient from the
first step. Every other parameter, and the old rows of the head, are copied unchanged.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..config import DEFAULT_PALETTE, ModelConfig
from ..postprocess.finetuned import with_postprocess
from ..postprocess.settings import PostprocessSettings

__all__ = ["NEW_CLASS_BIAS_OFFSET", "grow_head", "grown_config", "head_parameters"]

logger = logging.getLogger(__name__)

#: How far below the mean old bias a new class's bias starts (logit units).
NEW_CLASS_BIAS_OFFSET = 3.0
_NOISE = 0.01


def grown_config(
    config: ModelConfig, new_classes: Sequence[str], colors: Sequence[str] | None = None
) -> ModelConfig:
    """``config`` with ``new_classes`` appended to ``class_names`` (and colours), and
    without the per-scan intensity mixture in its post-processing (see the comment below).

    Args:
        new_classes: names of the new classes, in logit order after the old ones.
        colors: one ``"#rrggbb[aa]"`` colour per new class; None picks, for each, the first
            colour of :data:`~napari_medseg.config.DEFAULT_PALETTE` no class uses yet.

    Raises:
        ValueError: an empty or duplicate name (also against the old names), or a colour
            count that does not match.
    """
    names = tuple(new_classes)
    if not names:
        return config
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"new class name {name!r} must be a non-empty string")
        if name in config.class_names:
            raise ValueError(f"new class {name!r} already exists; classes: {config.class_names}")
    if len(set(names)) != len(names):
        raise ValueError(f"new classes {names} must be unique")
    if colors is None:
        used = {c.lower() for c in config.class_colors if isinstance(c, str)}
        picked = []
        for i in range(len(names)):
            free = [c for c in DEFAULT_PALETTE if c.lower() not in used]
            color = free[0] if free else DEFAULT_PALETTE[(len(config.class_names) + i - 1) % len(DEFAULT_PALETTE)]
            used.add(color.lower())
            picked.append(color)
        colors = picked
    colors = tuple(colors)
    if len(colors) != len(names):
        raise ValueError(f"{len(colors)} colours {colors} given for {len(names)} new classes {names}")
    data = config.to_dict()
    data["class_names"] = [*config.class_names, *names]
    data["class_colors"] = [*config.to_dict()["class_colors"], *colors]
    values = data.get("extra", {}).get("label_values")
    if values is not None:  # new classes are written with the next free values
        start = max(values) + 1
        data["extra"] = {**data["extra"], "label_values": [*values, *range(start, start + len(names))]}
    grown = ModelConfig.from_dict(data)
    settings = PostprocessSettings.offered(config)
    if settings.mixture is not None:
        # One Gaussian per class cannot tell a new structure from the tissue it is made of
        # (the lateral ventricles are CSF): the mixture labelled half a brain "ventricle".
        # The grown model keeps the brain mask and decides the classes inside it itself.
        grown = with_postprocess(grown, settings.without_mixture())
    return grown


def head_parameters(model: nn.Module, num_new: int = 1) -> list[str]:
    """State-dict keys of the parameters that produce ``model``'s logits.

    Found by building the same architecture with ``num_new`` more classes and listing the
    entries whose shape changes (only their first axis may change).

    Raises:
        ValueError: the model has no ModelConfig, or a shape changed in another way.
    """
    config = _config_of(model)
    from ..models import build_model

    bigger = build_model(grown_config(config, [f"new class {i}" for i in range(num_new)]))
    return _changed_keys(model.state_dict(), bigger.state_dict(), config.num_classes, num_new)


def grow_head(
    model: nn.Module,
    new_classes: Sequence[str],
    *,
    colors: Sequence[str] | None = None,
    seed: int = 0,
) -> nn.Module:
    """A new model with ``len(new_classes)`` more output channels; ``model`` is untouched.

    The result is built from :func:`grown_config` (so it saves and loads as a bundle), holds
    copies of all of ``model``'s weights, and initialises the new channels as the module
    docstring describes. It is on ``model``'s device, in ``model``'s train/eval mode, and
    keeps ``bundle_meta`` / ``bundle_path`` when ``model`` has them (its parent's identity).

    Returns:
        The grown model, mapping (B, C, *S) to (B, K + n, *S); ``model`` itself when
        ``new_classes`` is empty (no copy).
    """
    names = tuple(new_classes)
    if not names:
        return model
    config = _config_of(model)
    from ..models import build_model

    new_config = grown_config(config, names, colors)
    grown = build_model(new_config)
    old_state = model.state_dict()
    new_state = grown.state_dict()
    k, n = config.num_classes, len(names)
    changed = set(_changed_keys(old_state, new_state, k, n))
    generator = torch.Generator().manual_seed(seed)
    merged = {}
    for key, target in new_state.items():
        old = old_state[key].detach().to("cpu")
        if key not in changed:
            merged[key] = old.clone()
            continue
        value = torch.empty_like(target, dtype=old.dtype)
        value[:k] = old
        mean = old.float().mean(dim=0, keepdim=True)
        if old.ndim == 1:  # bias
            value[k:] = (mean - NEW_CLASS_BIAS_OFFSET).to(old.dtype)
        else:
            scale = old.float().std().clamp_min(1e-6) * _NOISE
            noise = torch.randn((n, *old.shape[1:]), generator=generator) * scale
            value[k:] = (mean + noise).to(old.dtype)
        merged[key] = value
    grown.load_state_dict(merged)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    grown.to(device).train(model.training)
    for attribute in ("bundle_meta", "bundle_path"):
        if hasattr(model, attribute):
            setattr(grown, attribute, copy.deepcopy(getattr(model, attribute)))
    logger.info("grew output head %s from %d to %d classes", sorted(changed), k, k + n)
    return grown


def _config_of(model: nn.Module) -> ModelConfig:
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise ValueError(f"model {type(model).__name__} has no .config (a ModelConfig)")
    return config


def _changed_keys(
    old: Mapping[str, torch.Tensor], new: Mapping[str, torch.Tensor], k: int, n: int
) -> list[str]:
    if set(old) != set(new):
        raise ValueError(
            "the architecture's parameters depend on the class count in a way that cannot be "
            f"grown (keys differ: {sorted(set(old) ^ set(new))[:5]})"
        )
    changed = []
    for key, value in old.items():
        shape, grown_shape = tuple(value.shape), tuple(new[key].shape)
        if shape == grown_shape:
            continue
        if not shape or shape[0] != k or grown_shape != (k + n, *shape[1:]):
            raise ValueError(
                f"parameter {key} changes from {shape} to {grown_shape} with {n} more classes; "
                f"only an output head with first axis {k} -> {k + n} can be grown"
            )
        changed.append(key)
    if not changed:
        raise ValueError("no parameter depends on the class count; cannot find the output head")
    return changed
