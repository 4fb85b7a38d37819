"""Tiny model configs shared by the model tests (kept small: 2 CPU cores)."""

from __future__ import annotations

import pytest

from napari_medseg.config import ModelConfig

TINY_KWARGS = {
    "unet": {"features": [4, 8, 16]},
    "transunet": {
        "features": [4, 8, 16],
        "embed_dim": 16,
        "depth": 1,
        "num_heads": 2,
        "train_grid": 4,
    },
}


def tiny_config(architecture: str = "unet", spatial_dims: int = 2, **changes) -> ModelConfig:
    fields = {
        "architecture": architecture,
        "spatial_dims": spatial_dims,
        "in_channels": 3 if spatial_dims == 2 else 1,
        "class_names": ("background", "brain", "lesion"),
        "arch_kwargs": TINY_KWARGS.get(architecture, {}),
        "patch_size": (16,) * spatial_dims,
        "dropout_sites": ("decoder",),
    }
    fields.update(changes)
    return ModelConfig(**fields)


@pytest.fixture
def make_config():
    """Factory: ``make_config(architecture="unet", spatial_dims=2, **field_changes)``."""
    return tiny_config
