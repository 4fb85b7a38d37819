"""A scan through a MONAI bundle's inference pipeline, with MONAI's own transforms and inferer.

The scan becomes what MONAI's readers make of its file: a float32 ``MetaTensor`` of shape
(1, x, y, z) whose affine maps (x, y, z) indices to RAS millimetres (``LoadImaged`` +
``EnsureChannelFirstd``). The checked pre-transforms (:mod:`.monai_config`) are built from
MONAI's classes with their literal arguments, the network runs under MONAI's
``SlidingWindowInferer`` (or ``SimpleInferer``), softmax gives probabilities, and MONAI's
``Invertd`` undoes the pre-transforms, so the result lies on the scan's own grid.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ...control import ProgressCallback, StopCheck, check_stop, report
from ...types import Geometry
from .monai_config import InferenceConfig
from .sampling import sample_progress

__all__ = ["PRED", "build_preprocessing", "infer", "probabilities_each", "ras_affine",
           "scan_metatensor"]  # fmt: skip

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_REVERSE = np.eye(4)[[2, 1, 0, 3]]  # (z, y, x, 1) <-> (x, y, z, 1)
PRED = "pred"


def ras_affine(geometry: Geometry) -> np.ndarray:
    """(4, 4) float64 affine from (x, y, z) voxel indices to RAS mm, as MONAI's readers give."""
    return _LPS_TO_RAS @ _REVERSE @ geometry.affine @ _REVERSE


def scan_metatensor(image: np.ndarray, geometry: Geometry):
    """(1, x, y, z) float32 ``MetaTensor`` of a (z, y, x) scan, with its RAS affine."""
    from monai.data import MetaTensor
    from monai.utils import MetaKeys, SpaceKeys

    voxels = torch.from_numpy(np.ascontiguousarray(np.asarray(image, dtype=np.float32).transpose(2, 1, 0)))[None]
    affine = torch.as_tensor(ras_affine(geometry), dtype=torch.float64)
    meta = {MetaKeys.SPACE: SpaceKeys.RAS, MetaKeys.ORIGINAL_AFFINE: affine.clone(),
            MetaKeys.SPATIAL_SHAPE: np.asarray(voxels.shape[1:])}  # fmt: skip
    return MetaTensor(voxels, affine=affine, meta=meta)


def build_preprocessing(config: InferenceConfig):
    """MONAI's ``Compose`` of the checked pre-transforms, acting on ``config.image_key``."""
    import monai.transforms as transforms

    steps = [getattr(transforms, name)(keys=config.image_key, **_arguments(kwargs)) for name, kwargs in config.transforms]
    return transforms.Compose(steps)


def _arguments(kwargs: Mapping[str, Any]) -> dict:
    out = dict(kwargs)
    if out.get("dtype") is not None:
        out["dtype"] = np.dtype(out["dtype"])
    for name in ("subtrahend", "divisor"):  # MONAI takes arrays there, JSON gives lists
        if isinstance(out.get(name), list):
            out[name] = np.asarray(out[name], dtype=np.float32)
    return out


def probabilities_each(
    networks: Sequence[nn.Module],
    image: np.ndarray,
    geometry: Geometry,
    config: InferenceConfig,
    *,
    device: torch.device,
    progress: ProgressCallback = None,
    should_stop: StopCheck = None,
) -> Iterator[np.ndarray]:
    """Class probabilities of a (z, y, x) scan through the bundle's pipeline, for each network
    in turn, the scan preprocessed once: one (K, z, y, x) float32 array on the scan's own grid
    at a time (one network: a prediction; several: uncertainty samples).

    Args:
        networks: each maps (B, 1, *roi) to logits (B, K, *roi); run as they are (eval
            mode is the caller's), float32.
        image: (z, y, x) voxels in SimpleITK's array order, any real dtype.
        geometry: the scan's grid (LPS, (z, y, x) order).
        device: where the windows run; the whole-volume arrays stay on the CPU.
        progress: counts window batches over all the networks.

    Raises:
        Cancelled: ``should_stop()`` returned True before a window batch.
    """
    from monai.transforms import Invertd

    preprocessing = build_preprocessing(config)
    data = preprocessing({config.image_key: scan_metatensor(image, geometry)})
    prepared = data[config.image_key]
    invert = Invertd(PRED, transform=preprocessing, orig_keys=config.image_key, nearest_interp=False)
    for i, network in enumerate(networks):
        check_stop(should_stop)
        counted = sample_progress(progress, i, len(networks))
        with torch.no_grad():
            logits = infer(network, prepared[None], config, device, counted, should_stop)[0].to("cpu")
        restored = invert({**data, PRED: torch.softmax(logits, dim=0) if config.activation_first else logits})[PRED]
        restored = restored if config.activation_first else torch.softmax(restored, dim=0)
        out = np.asarray(restored.detach().cpu().numpy(), dtype=np.float32).transpose(0, 3, 2, 1)
        if out.shape[1:] != np.shape(image):
            raise RuntimeError(f"the bundle's inverse transforms gave {out.shape[1:]}, not the scan's {np.shape(image)}")
        yield np.ascontiguousarray(out)


def infer(network, batch, config: InferenceConfig, device, progress, should_stop):
    """Logits (1, K, *S) of a (1, C, *S) batch on the CPU, by the bundle's inferer; ``network``
    is any predictor of window batches (Grad-CAM's explains them, :mod:`.monai_cam`)."""
    from monai.inferers import SimpleInferer, SlidingWindowInferer

    kwargs = dict(config.inferer_kwargs)
    if config.inferer == "SlidingWindowInferer":
        roi = kwargs["roi_size"]
        per_batch = int(kwargs.get("sw_batch_size", 1))
        total = math.ceil(_window_count(batch.shape[2:], roi, kwargs.get("overlap", 0.25)) / max(per_batch, 1))
        inferer = SlidingWindowInferer(**kwargs, sw_device=device, device=torch.device("cpu"))
    else:
        total, inferer = 1, SimpleInferer()
    return inferer(batch, _Windows(network, device, total, progress, should_stop)).to("cpu")


def _window_count(shape, roi, overlap) -> int:
    """How many windows MONAI's sliding window lays over ``shape`` (its own rule)."""
    overlaps = overlap if isinstance(overlap, (list, tuple)) else [overlap] * len(shape)
    count = 1
    for size, r, o in zip(shape, roi, overlaps):
        size = max(int(size), int(r))
        interval = max(int(r * (1 - o)), 1) if size != r else r
        count *= math.ceil((size - r) / interval) + 1
    return count


class _Windows:
    """The network as the inferer's predictor: checks ``should_stop`` before each window
    batch and reports (batches done, batches in all) after it."""

    def __init__(self, network, device, total: int, progress: ProgressCallback, should_stop: StopCheck) -> None:
        self.network, self.device, self.total = network, device, total
        self.progress, self.should_stop, self.done = progress, should_stop, 0

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        check_stop(self.should_stop)
        logits = self.network(windows.to(self.device))
        self.done += 1
        report(self.progress, min(self.done, self.total), self.total)
        return logits
