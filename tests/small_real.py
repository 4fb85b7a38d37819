"""A small real scan and a tiny network that works at its spacing: real maps in a second.

The dev subject's T1 (a real head, see data/README.md) at every 4th voxel: 36 x 45 x 36
voxels of 4 mm, with its own origin and direction. The tiny 2D U-Net of
:mod:`tests.tiny_models` (random weights, dropout) gets a 4 mm target spacing, so the
model grid is the scan's own size.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from napari_medseg.types import Geometry, Volume
from tests.tiny_models import tiny_config

STRIDE = 4
# The shipped tissue bundles' expected ranges (mL), for drawing intervals.
EXPECTED_VOLUME_ML = {"CSF": [270.94, 630.43], "grey matter": [435.02, 798.13], "white matter": [362.09, 616.24]}


def small_real_scan(shared_data: Path) -> Volume:
    """The dev subject's T1 at every ``STRIDE``-th voxel, on the matching 4 mm grid."""
    from napari_medseg.io import read_volume

    full = read_volume(shared_data / "dev-subject" / "t1.nii.gz")
    geometry = Geometry(tuple(STRIDE * s for s in full.spacing), full.geometry.origin, full.geometry.direction)
    array = np.ascontiguousarray(full.array[::STRIDE, ::STRIDE, ::STRIDE])
    return Volume(array=array, geometry=geometry, modality="MR", meta={"source": str(shared_data / "dev-subject" / "t1.nii.gz")})


def tiny_coarse_model(seed: int = 0) -> torch.nn.Module:
    """The tiny 2D U-Net at a 4 mm target spacing, with the shipped expected volumes."""
    from napari_medseg.models import build_model

    base = tiny_config()
    extra = {**base.extra, "context_offsets_mm": [-4.0, 0.0, 4.0], "expected_volume_ml": EXPECTED_VOLUME_ML}
    config = dataclasses.replace(base, target_spacing=(4.0, 4.0, 4.0), extra=extra)
    torch.manual_seed(seed)
    return build_model(config).eval()


def tiny_coarse_bundle(folder: Path, name: str = "tiny-coarse") -> Path:
    from napari_medseg.models import save_bundle

    return save_bundle(tiny_coarse_model(), folder / name, meta={"description": "test model at 4 mm"})


def tiny_uncertainty(scan: Volume) -> np.ndarray:
    """Total uncertainty (z, y, x, nats) of 3 MC-dropout samples of the tiny network."""
    from napari_medseg.uncertainty import estimate_uncertainty

    return estimate_uncertainty(scan, tiny_coarse_model(), method="mc-dropout", samples=3, device="cpu").total
