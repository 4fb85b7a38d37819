"""Grad-CAM of a MONAI bundle, computed where the bundle's network runs.

The scan goes through the bundle's own pre-transforms (:mod:`.monai_pipeline`); the map is
computed on that grid by the bundle's own inferer (``SlidingWindowInferer`` with its roi,
overlap and blending mode, or ``SimpleInferer``) with a predictor that explains each window
batch instead of predicting it: the inferer is given the image with the region as a second
channel, so each window carries its own part of the region. The score of a window is the
target class's logits summed over that part: the user's region, resampled onto the
preprocessed grid (nearest neighbour, MONAI's ``ResampleToMatch`` through both grids'
affines), or by default the voxels the bundle's own prediction gives that class. MONAI's
``Invertd`` brings the one-channel map back to the scan's grid (linear interpolation).
"""

from __future__ import annotations

import numpy as np
import torch

from ...control import ProgressCallback, StopCheck
from ...types import Geometry
from .cam import WindowExplainer, WindowMaps, checked_region, checked_target, nothing_to_explain
from .monai_config import InferenceConfig
from .monai_pipeline import PRED, build_preprocessing, infer, scan_metatensor
from .sampling import sample_progress

__all__ = ["monai_grad_cam"]


def monai_grad_cam(
    network: torch.nn.Module,
    image: np.ndarray,
    geometry: Geometry,
    config: InferenceConfig,
    class_names,
    *,
    explainer: WindowExplainer,
    target_class: int,
    region: np.ndarray | None = None,
    device: torch.device,
    progress: ProgressCallback = None,
    should_stop: StopCheck = None,
) -> np.ndarray:
    """The map of :meth:`~.monai_model.MonaiBundleModel.grad_cam_volume` (see the module docstring).

    Returns:
        (z, y, x) float32 >= 0 on ``image``'s own grid.
    """
    from monai.data import MetaTensor
    from monai.transforms import Invertd

    target_class = checked_target(target_class, class_names)
    region = checked_region(region, np.shape(image))
    with explainer(network) as explain_windows:  # checks the layer and method before any work
        preprocessing = build_preprocessing(config)
        data = preprocessing({config.image_key: scan_metatensor(image, geometry)})
        prepared = data[config.image_key]
        phases = 1 if region is not None else 2
        if region is None:
            with torch.no_grad():
                logits = infer(network, prepared[None], config, device, sample_progress(progress, 0, phases), should_stop)
            model_region = _plain(logits[0]).argmax(0) == target_class
        else:
            model_region = _region_on_model_grid(region, geometry, prepared)
        if not model_region.any():
            return nothing_to_explain(target_class, region is not None, np.shape(image))
        stacked = torch.cat([_plain(prepared).to(torch.float32)[None], model_region[None, None].to(torch.float32)], dim=1)
        cam = infer(_ExplainedWindows(explain_windows), stacked, config, device,
                    sample_progress(progress, phases - 1, phases), should_stop)[0]  # fmt: skip
    invert = Invertd(PRED, transform=preprocessing, orig_keys=config.image_key, nearest_interp=False)
    # a MetaTensor: Invertd skips a plain tensor, whose transforms it cannot trace
    restored = invert({**data, PRED: MetaTensor(_plain(cam).to(torch.float32))})[PRED]
    out = np.asarray(restored.detach().cpu().numpy(), dtype=np.float32)[0].transpose(2, 1, 0)
    if out.shape != np.shape(image):
        raise RuntimeError(f"the bundle's inverse transforms gave {out.shape}, not the scan's {np.shape(image)}")
    return np.ascontiguousarray(np.maximum(out, 0.0))


def _region_on_model_grid(region: np.ndarray, geometry: Geometry, prepared) -> torch.Tensor:
    """The scan-grid ``region`` (z, y, x) on the preprocessed (x', y', z') grid of ``prepared``."""
    from monai.transforms import ResampleToMatch

    source = scan_metatensor(region.astype(np.float32), geometry)
    moved = ResampleToMatch(mode="nearest", padding_mode="zeros")(source, img_dst=prepared)
    return _plain(moved)[0] > 0.5


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """A MONAI ``MetaTensor``'s plain tensor (its meta would follow it into the inferer)."""
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor


class _ExplainedWindows:
    """The inferer's predictor: windows (B, 2, *roi) of image and region in, maps (B, 1, *roi) out."""

    def __init__(self, explain_windows: WindowMaps) -> None:
        self.explain_windows = explain_windows

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        images, regions = windows[:, :1], windows[:, 1] > 0.5
        maps = torch.zeros((windows.shape[0], 1, *windows.shape[2:]), dtype=torch.float32)
        explained = regions.flatten(1).any(dim=1)
        if explained.any():  # windows without a region voxel have a zero map: not worth a backward pass
            maps[explained.cpu(), 0] = self.explain_windows(images[explained], regions[explained])
        return maps.to(windows.device)
