"""A tiny but real MONAI bundle, written the way the MONAI model zoo writes them.

``configs/inference.json`` follows the zoo's spleen segmentation bundle: ``imports`` and
``device`` expressions, ``network: "$@network_def.to(@device)"``, a ``Compose`` of
``LoadImaged``, ``EnsureChannelFirstd``, ``Orientationd`` (RAS), ``Spacingd`` (to a spacing
unlike the scan's), ``ScaleIntensityRanged`` and ``EnsureTyped``, a ``SlidingWindowInferer``
whose roi is smaller than the scan, and a postprocessing ``Compose`` of ``Activationsd``,
``Invertd``, ``AsDiscreted`` and ``SaveImaged``. The weights are a freshly initialised
``monai.networks.nets.UNet``'s state dict, one seed.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np

CLASSES = ("background", "liver", "spleen")
SCAN_SHAPE = (18, 40, 34)  # z, y, x voxels
SCAN_SPACING = (2.5, 0.9, 1.1)  # z, y, x mm


def _transform(target: str, **kwargs) -> dict:
    return {"_target_": target, "keys": "image", **kwargs}


INFERENCE = {
    "imports": ["$import glob", "$import os"],
    "bundle_root": ".",
    "output_dir": "$@bundle_root + '/eval'",
    "dataset_dir": "/data/Task09_Spleen",
    "datalist": "$list(sorted(glob.glob(@dataset_dir + '/imagesTs/*.nii.gz')))",
    "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
    "num_classes": len(CLASSES),
    "network_def": {
        "_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": "@num_classes",
        "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1, "norm": "instance",
    },
    "network": "$@network_def.to(@device)",
    "preprocessing": {
        "_target_": "Compose",
        "transforms": [
            _transform("LoadImaged"),
            _transform("EnsureChannelFirstd"),
            _transform("Orientationd", axcodes="RAS"),
            _transform("Spacingd", pixdim=[1.3, 1.0, 2.0], mode="bilinear"),
            _transform("ScaleIntensityRanged", a_min=-200, a_max=300, b_min=0.0, b_max=1.0, clip=True),
            _transform("EnsureTyped"),
        ],
    },
    "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
    "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "num_workers": 0},
    "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [16, 16, 16], "sw_batch_size": 2, "overlap": 0.25,
                "mode": "gaussian"},
    "postprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
             "nearest_interp": False, "to_tensor": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg"},
        ],
    },
    "handlers": [{"_target_": "StatsHandler", "iteration_log": False}],
    "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                  "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing"},
    "checkpointloader": {"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
                         "load_dict": {"model": "@network"}},
    "initialize": ["$monai.utils.set_determinism(seed=123)", "$@checkpointloader(@evaluator)"],
    "run": ["$@evaluator.run()"],
}  # fmt: skip

METADATA = {
    "version": "0.1.0",
    "monai_version": "1.6.1",
    "task": "tiny abdominal segmentation",
    "network_data_format": {
        "inputs": {"image": {"type": "image", "format": "hounsfield", "modality": "CT", "num_channels": 1,
                             "spatial_shape": [16, 16, 16], "channel_def": {"0": "image"}}},
        "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": len(CLASSES),
                             "spatial_shape": [16, 16, 16],
                             "channel_def": {str(i): name for i, name in enumerate(CLASSES)}}},
    },
}  # fmt: skip


def inference_config() -> dict:
    """A fresh copy of the zoo-style inference config, to spoil in tests."""
    return copy.deepcopy(INFERENCE)


def write_bundle(folder: Path, inference: dict | None = None, *, weights: object = "state", seed: int = 0,
                 yaml: bool = False) -> Path:  # fmt: skip
    """Write a bundle into ``folder``: configs, and ``models/model.pt`` holding the UNet's
    state dict (``weights="state"``), it nested under ``"model"`` (``"nested"``), any other
    object as given, or nothing (None)."""
    import torch
    from monai.networks.nets import UNet

    inference = INFERENCE if inference is None else inference
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(exist_ok=True)
    (folder / "configs" / "metadata.json").write_text(json.dumps(METADATA, indent=2))
    if yaml:
        import yaml as pyyaml

        (folder / "configs" / "inference.yaml").write_text(pyyaml.safe_dump(inference, sort_keys=False))
    else:
        (folder / "configs" / "inference.json").write_text(json.dumps(inference, indent=2))
    if weights is None:
        return folder
    if weights in ("state", "nested"):
        torch.manual_seed(seed)
        kwargs = {k: v for k, v in INFERENCE["network_def"].items() if k != "_target_"}
        network = UNet(**{**kwargs, "out_channels": len(CLASSES)})
        state = network.state_dict()
        weights = state if weights == "state" else {"model": state, "epoch": 3}
    torch.save(weights, folder / "models" / "model.pt")
    return folder


def oblique_scan(seed: int = 0):
    """A CT-like (z, y, x) float32 scan and its grid: axes flipped and tilted 0.2 rad, an
    origin off zero (so Orientationd, Spacingd and their inverses all have work)."""
    from napari_medseg.types import Geometry

    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in SCAN_SHAPE], indexing="ij")
    image = np.where(y**2 + x**2 < 0.8, 40.0, -1000.0) + 250.0 * np.exp(-((z - 0.2) ** 2 + (y + 0.3) ** 2 + x**2) / 0.1)
    image = (image + rng.normal(0, 20, SCAN_SHAPE)).astype(np.float32)
    c, s = math.cos(0.2), math.sin(0.2)
    direction = np.array([[-1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]) @ np.diag([1.0, 1.0, -1.0])
    geometry = Geometry(SCAN_SPACING, (-30.5, 12.25, 100.125), tuple(map(tuple, direction)))
    return image, geometry
