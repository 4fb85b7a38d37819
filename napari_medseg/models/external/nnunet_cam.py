"""Grad-CAM of an nnU-Net model folder, computed where nnU-Net runs.

The scan goes through nnU-Net's own preprocessor (as for a prediction); the map is computed
on that grid window by window, with nnU-Net's windows and Gaussian weights
(:func:`.nnunet_window.sliding_window_cam`), once per fold with the fold's weights, and
averaged over the folds; mirroring is not applied (a map of a mirrored input would have to
be mirrored back and averaged, which explains a different computation). The score of each
window is the target class's logits summed over the region inside it: the user's region,
mapped onto the preprocessed grid by nnU-Net's preprocessor as it maps a segmentation, or
by default the voxels the folds' averaged, unmirrored prediction gives that class. The map
goes back to the scan's grid nnU-Net's own way (resampling with the configuration's
``resampling_fn_probabilities``, un-cropping the bounding box, un-transposing), without the
softmax probabilities get: a map is one non-negative channel.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from ...control import ProgressCallback, StopCheck
from .nnunet_model import _padded_shape
from .cam import WindowExplainer, checked_region, checked_target, nothing_to_explain
from .nnunet_window import sliding_window_cam, window_slicers
from .sampling import sample_progress

__all__ = ["nnunet_grad_cam"]

logger = logging.getLogger(__name__)


def nnunet_grad_cam(
    model,
    image: np.ndarray,
    spacing: Sequence[float],
    *,
    explainer: WindowExplainer,
    target_class: int,
    region: np.ndarray | None = None,
    folds: Sequence[str] | None = None,
    device: torch.device | str = "cpu",
    progress: ProgressCallback = None,
    should_stop: StopCheck = None,
) -> np.ndarray:
    """The map of :meth:`~.nnunet_model.NnUNetModel.grad_cam_volume` (see the module docstring).

    Returns:
        (z, y, x) float32 >= 0 on ``image``'s own grid.
    """
    target_class = checked_target(target_class, model.config.class_names)
    region = checked_region(region, np.shape(image))
    folds = list(folds) if folds is not None else list(model.fold_states)
    device = torch.device(device)
    was_fold, was_training = model.active_fold, model.network.training
    model.network.eval().to(device)
    try:
        with explainer(model.network) as explain_windows:  # checks the layer and method before any work
            data, properties = model._preprocess(image, spacing)
            phases = 1 if region is not None else 2
            if region is None:
                logits = model.fold_logits(data, folds=folds, mirroring=False, device=device, should_stop=should_stop,
                                           progress=sample_progress(progress, 0, phases))  # fmt: skip
                model_region = (logits.argmax(0) == target_class).clone()  # a normal tensor, not an inference one
            else:
                model_region = _region_on_model_grid(model, image, spacing, region)
            if not model_region.any():
                return nothing_to_explain(target_class, region is not None, np.shape(image))
            cam = _fold_average(model, explain_windows, data, model_region, folds, device,
                                sample_progress(progress, phases - 1, phases), should_stop)  # fmt: skip
    finally:
        model.use_fold(was_fold)
        model.network.train(was_training)
    return _to_scan(model, cam, properties)


def _fold_average(model, explain_windows, data, region, folds, device, progress, should_stop) -> torch.Tensor:
    """The map (*S) on the preprocessed grid, averaged over ``folds``."""
    patch = model.folder.patch_size
    per_fold = len(window_slicers(_padded_shape(data.shape[1:], patch), patch))
    total = None
    logger.info("Grad-CAM of nnU-Net model %s: averaged over folds %s, without mirroring", model.folder.path.name, folds)
    for i, fold in enumerate(folds):
        model.use_fold(fold)
        cam = sliding_window_cam(explain_windows, data, region, patch, device=device, progress=progress,
                                 should_stop=should_stop, done=i * per_fold, total=per_fold * len(folds))  # fmt: skip
        total = cam if total is None else total + cam
    return total / len(folds)


def _region_on_model_grid(model, image: np.ndarray, spacing: Sequence[float], region: np.ndarray) -> torch.Tensor:
    """The scan-grid ``region`` on nnU-Net's preprocessed grid, mapped by nnU-Net's
    preprocessor as it maps a segmentation (transpose, crop, ``resampling_fn_seg``)."""
    plans_manager, configuration, _ = model._managers()
    preprocessor = configuration.preprocessor_class(verbose=False)
    _, segmentation, _ = preprocessor.run_case_npy(
        np.asarray(image, dtype=np.float32)[None], region[None].astype(np.int8), {"spacing": [float(s) for s in spacing]},
        plans_manager, configuration, model.folder.dataset,
    )  # fmt: skip
    return torch.from_numpy(np.ascontiguousarray(segmentation[0] > 0))  # -1 marks voxels outside the non-zero crop


def _to_scan(model, cam: torch.Tensor, properties: dict) -> np.ndarray:
    """The (z, y, x) map on the scan's grid, as nnU-Net's
    ``convert_predicted_logits_to_segmentation_with_correct_shape`` reverts its logits, with
    nnU-Net's functions, minus the softmax."""
    from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image

    plans_manager, configuration, _ = model._managers()
    original = [properties["spacing"][i] for i in plans_manager.transpose_forward]
    shape = properties["shape_after_cropping_and_before_resampling"]
    # a 2d configuration's spacing has no slice axis: nnU-Net's export keeps the scan's there
    current = configuration.spacing if len(configuration.spacing) == len(shape) else [original[0], *configuration.spacing]
    resampled = configuration.resampling_fn_probabilities(cam[None].numpy(), shape, current, original)
    resampled = np.asarray(resampled.numpy() if isinstance(resampled, torch.Tensor) else resampled, dtype=np.float32)[0]
    full = insert_crop_into_image(np.zeros(properties["shape_before_cropping"], dtype=np.float32), resampled,
                                  properties["bbox_used_for_cropping"])  # fmt: skip
    # plans may resample with cubic splines, whose overshoot would dip below zero
    return np.ascontiguousarray(np.maximum(full.transpose(plans_manager.transpose_backward), 0.0), dtype=np.float32)
