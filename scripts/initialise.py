"""Start a network from a trained bundle (transfer learning) for ``scripts/train_brain.py``.

Two kinds of start:

- the same architecture and settings: every tensor is copied; a structure model started
  from a tissue model also gets the output layer, each structure's row from its tissue's;
- a TransUNet from a U-Net of the same blocks whose ``features`` are the U-Net's without its
  last: the TransUNet's encoder levels are the U-Net's finest ones, and its decoder levels
  and head the U-Net's finest ones, so only the transformer, which stands where the
  U-Net's deepest encoder level, bottleneck and first decoder level were, starts new.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import torch

from napari_medseg.config import ModelConfig
from napari_medseg.training.label_maps import STRUCTURES, TISSUE_NAMES, TISSUE_OF_STRUCTURE

logger = logging.getLogger("train_brain")

#: Settings a TransUNet must share with the U-Net it starts from (their blocks are built
#: alike), with both constructors' defaults.
SHARED_BLOCK_SETTINGS = {"norm": "group", "residual": False}


def initialise_from(model: torch.nn.Module, bundle: str) -> dict:
    """Start ``model`` from the trained bundle at ``bundle`` (see the module docstring).

    A structure model started from a tissue model gets the tissue model's output layer,
    each structure's row copied from its tissue's (:data:`TISSUE_OF_STRUCTURE`) with the
    bias lowered by the log of the number of structures sharing that tissue: at step 0 the
    structure probabilities summed per tissue equal the tissue model's, and training only
    has to split each tissue.

    Returns what was done, for ``meta.json``.

    Raises:
        SystemExit: the bundle's network cannot start ``model`` (another architecture,
            other settings or inputs).
    """
    from napari_medseg.models import load_model

    parent = load_model(bundle, device="cpu")
    own, theirs = model.config, parent.config
    rename = tensor_renaming(theirs, own)
    if rename is None:
        raise SystemExit(
            f"--init-from {bundle}: {theirs.architecture} {theirs.arch_kwargs} with {theirs.in_channels} inputs "
            f"cannot start {own.architecture} {own.arch_kwargs} with {own.in_channels} inputs"
        )
    source = {new: v.float() for k, v in parent.state_dict().items() if (new := rename(k)) is not None}
    target = model.state_dict()
    copied = {k: v for k, v in source.items() if k in target and v.shape == target[k].shape}
    mapped = []
    if tuple(theirs.class_names) == TISSUE_NAMES and tuple(own.class_names) == tuple(s[1] for s in STRUCTURES):
        tissue = torch.from_numpy(TISSUE_OF_STRUCTURE.astype("int64"))
        shares = torch.bincount(tissue, minlength=len(TISSUE_NAMES)).float()
        for name in target:
            if name not in copied and name in source and source[name].shape[0] == len(TISSUE_NAMES):
                rows = source[name][tissue].clone()
                if rows.ndim == 1:  # the bias
                    rows -= torch.log(shares[tissue])
                if rows.shape == target[name].shape:
                    copied[name] = rows
                    mapped.append(name)
    model.load_state_dict(copied, strict=False)
    left = sorted(set(target) - set(copied))
    logger.info("initialised %d of %d tensors from %s (output rows mapped: %s; new: %s)", len(copied), len(target), bundle, mapped, left)
    return {"bundle": str(bundle), "id": getattr(parent, "bundle_meta", {}).get("id"), "architecture": theirs.architecture,
            "tensors_copied": len(copied), "output_rows_mapped_from_tissue": mapped, "tensors_new": left}  # fmt: skip


def tensor_renaming(theirs: ModelConfig, own: ModelConfig) -> Callable[[str], str | None] | None:
    """How the parent's tensor names become the new model's, or None when it cannot start it.

    The renaming returns None for a parent tensor the new model has no place for.
    """
    if theirs.in_channels != own.in_channels:
        return None
    if (theirs.architecture, theirs.arch_kwargs) == (own.architecture, own.arch_kwargs):
        return lambda name: name
    if (theirs.architecture, own.architecture) != ("unet", "transunet"):
        return None
    parent_features = list(theirs.arch_kwargs.get("features", ()))
    features = list(own.arch_kwargs.get("features", ()))
    same_blocks = all(
        theirs.arch_kwargs.get(k, default) == own.arch_kwargs.get(k, default) for k, default in SHARED_BLOCK_SETTINGS.items()
    )
    if not same_blocks or len(features) < 2 or parent_features[:-1] != features:
        return None
    encoder_levels = len(features) - 1  # the TransUNet's CNN encoder: features[:-1]

    def rename(name: str) -> str | None:
        level = re.match(r"(encoder|decoder)\.levels\.(\d+)\.(.*)", name)
        if level is None:
            return name if name.startswith("decoder.head.") else None
        part, index, rest = level.group(1), int(level.group(2)), level.group(3)
        if part == "encoder":
            return name if index < encoder_levels else None
        index -= 1  # the U-Net's decoder has one more, coarser level first
        return f"decoder.levels.{index}.{rest}" if index >= 0 else None

    return rename
