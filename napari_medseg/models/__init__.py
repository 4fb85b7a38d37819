"""Segmentation networks (U-Net, TransUNet; 2D and 3D), their registry and model bundles.

Every network maps (B, C, *S) to logits (B, K, *S) with ``len(S) == spatial_dims`` and has
public ``encode`` / ``decode`` steps. Importing this package loads torch.
"""

from .blocks import dropout_modules
from .bundle import (
    BundleError,
    archive_bundle,
    load_bundle,
    resolve_device,
    save_bundle,
    weights_sha256,
)
from .catalog import (
    DEFAULT_MODEL,
    BundleInfo,
    delete_bundle,
    list_bundles,
    load_model,
    rename_bundle,
    resolve_bundle,
    user_models_dir,
)
from .registry import ARCHITECTURES, build_model, gradcam_layer_name
from .transunet import TransUNet
from .unet import UNet

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_MODEL",
    "BundleError",
    "BundleInfo",
    "TransUNet",
    "UNet",
    "archive_bundle",
    "build_model",
    "delete_bundle",
    "dropout_modules",
    "gradcam_layer_name",
    "list_bundles",
    "load_bundle",
    "load_model",
    "rename_bundle",
    "resolve_bundle",
    "resolve_device",
    "save_bundle",
    "user_models_dir",
    "weights_sha256",
]
