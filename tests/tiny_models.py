"""Tiny real networks and bundles for tests (random weights, deterministic)."""

from __future__ import annotations

from pathlib import Path

import torch

from napari_medseg.config import ModelConfig

CLASS_NAMES = ("background", "CSF", "grey matter", "white matter")


def tiny_config(
    *, spatial_dims: int = 2, postprocess: dict | None = None, architecture: str = "unet", slice_margin_mm: float = 0
) -> ModelConfig:
    extra = {"postprocess": postprocess or {}}
    if slice_margin_mm:
        extra["slice_margin_mm"] = slice_margin_mm
    kwargs = {"features": [4, 8, 16], "dropout": 0.2}
    if architecture == "transunet":
        kwargs.update(embed_dim=16, depth=1, num_heads=2, train_grid=4)
    if spatial_dims == 2:
        extra["context_offsets_mm"] = [-2.0, 0.0, 2.0]
    return ModelConfig(
        architecture=architecture,
        spatial_dims=spatial_dims,
        in_channels=3 if spatial_dims == 2 else 1,
        class_names=CLASS_NAMES,
        arch_kwargs=kwargs,
        canonical_orientation="RAS",
        target_spacing=(1.0, 1.0, 1.0),
        patch_size=(16, 16, 16) if spatial_dims == 3 else (),
        dropout_sites=("decoder",),
        extra=extra,
    )


def tiny_model(seed: int = 0, **kwargs) -> torch.nn.Module:
    from napari_medseg.models import build_model

    torch.manual_seed(seed)
    return build_model(tiny_config(**kwargs)).eval()


def tiny_bundle(folder: Path, name: str = "tiny-unet", seed: int = 0, **kwargs) -> Path:
    from napari_medseg.models import save_bundle

    return save_bundle(tiny_model(seed, **kwargs), folder / name, meta={"description": "test model"})
