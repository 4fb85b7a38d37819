"""nnU-Net's sliding-window inference, with progress and stop.

The same windows, Gaussian weights and mirroring as ``nnUNetPredictor`` (its own
``compute_steps_for_sliding_window``, ``compute_gaussian`` and ``pad_nd_image``): tile step
0.5 of the patch, Gaussian sigma 1/8 of the patch, logits averaged over every combination
of the allowed mirror axes, a 2d configuration run slice by slice along the first axis.
:func:`sliding_window_cam` lays the same windows and Gaussian over a class-activation map.
Logits and weights accumulate in float16 with nnU-Net's float16 Gaussian, as its predictor
does on every device: in float32 the windows' low-weight borders would come out more
exactly, and so differ from what nnU-Net gives by up to about 1e-2 in probability.
"""

from __future__ import annotations

import itertools

import torch

from ...control import ProgressCallback, StopCheck, check_stop, report

__all__ = ["mirror_combinations", "sliding_window_cam", "sliding_window_logits", "window_slicers"]

TILE_STEP = 0.5


def window_slicers(shape: tuple[int, ...], patch: tuple[int, ...]) -> list[tuple]:
    """Index tuples into a (C, *shape) array, one per window, in nnU-Net's order.

    ``shape`` is the padded (z, y, x) data shape; a 2d ``patch`` (2 entries) gives one window
    set per slice of the first axis.
    """
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    slice_axis = len(patch) < len(shape)
    steps = compute_steps_for_sliding_window(shape[1:] if slice_axis else shape, patch, TILE_STEP)
    windows = [tuple(slice(s, s + p) for s, p in zip(start, patch)) for start in itertools.product(*steps)]
    if not slice_axis:
        return [(slice(None), *w) for w in windows]
    return [(slice(None), d, *w) for d in range(shape[0]) for w in windows]


def mirror_combinations(axes: tuple[int, ...] | None) -> list[tuple[int, ...]]:
    """Tensor axes (of a (B, C, *patch) batch) to flip for each mirrored prediction."""
    if not axes:
        return []
    shifted = [a + 2 for a in axes]
    return [c for i in range(len(shifted)) for c in itertools.combinations(shifted, i + 1)]


@torch.inference_mode()
def sliding_window_logits(
    network: torch.nn.Module,
    data: torch.Tensor,
    patch: tuple[int, ...],
    *,
    mirror_axes: tuple[int, ...] | None,
    device: torch.device,
    progress: ProgressCallback = None,
    should_stop: StopCheck = None,
    done: int = 0,
    total: int | None = None,
    flips: list[tuple[int, ...]] | None = None,
) -> torch.Tensor:
    """Blended logits of ``network`` over preprocessed ``data`` (float16, as nnU-Net's).

    Args:
        data: (C, z, y, x) float32 on the CPU, nnU-Net's preprocessed image.
        patch: the configuration's patch size (2 or 3 entries).
        mirror_axes: patch axes to mirror (the checkpoint's allowed axes), or None.
        done, total: windows already run and to run in all (for progress over several folds).
        flips: the tensor axes (of a (B, C, *patch) batch) to flip for each averaged
            prediction, ``()`` for the unmirrored one; default: ``()`` and every combination
            of ``mirror_axes`` (nnU-Net's mirroring). ``[(4,)]`` gives one mirrored prediction.

    Returns:
        (K, z, y, x) float16 logits on the CPU.

    Raises:
        RuntimeError: the float16 sums overflowed (nnU-Net refuses such a case too).
    """
    from acvl_utils.cropping_and_padding.padding import pad_nd_image
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    padded, revert = pad_nd_image(data, patch, "constant", {"value": 0}, True, None)
    slicers = window_slicers(tuple(padded.shape[1:]), patch)
    total = total or len(slicers)
    gaussian = compute_gaussian(tuple(patch), sigma_scale=1.0 / 8, value_scaling_factor=10, dtype=torch.float16,
                                device=torch.device("cpu"))  # fmt: skip
    flips = [(), *mirror_combinations(mirror_axes)] if flips is None else list(flips)
    logits = weights = None
    for i, slicer in enumerate(slicers):
        check_stop(should_stop)
        window = padded[slicer][None].to(device)
        prediction = None
        for axes in flips:
            out = torch.flip(network(torch.flip(window, axes)), axes) if axes else network(window)
            prediction = out if prediction is None else prediction.add_(out)
        prediction = (prediction / len(flips))[0].float().cpu()
        if logits is None:
            logits = torch.zeros((prediction.shape[0], *padded.shape[1:]), dtype=torch.float16)
            weights = torch.zeros(padded.shape[1:], dtype=torch.float16)
        prediction *= gaussian
        logits[slicer] += prediction
        weights[slicer[1:]] += gaussian
        report(progress, done + i + 1, total)
    logits /= weights
    if torch.isinf(logits).any():
        raise RuntimeError("the blended logits overflowed float16 (nnU-Net's predictor stops on this too)")
    return logits[(slice(None), *revert[1:])]


def sliding_window_cam(
    explain_windows,
    data: torch.Tensor,
    region: torch.Tensor,
    patch: tuple[int, ...],
    *,
    device: torch.device,
    progress: ProgressCallback = None,
    should_stop: StopCheck = None,
    done: int = 0,
    total: int | None = None,
) -> torch.Tensor:
    """A class-activation map of preprocessed ``data``, window by window as nnU-Net predicts.

    The windows, padding and Gaussian weights of :func:`sliding_window_logits`, no mirroring;
    each window's map (``explain_windows``, see :mod:`.cam`) is weighted by the Gaussian and
    the sum divided by the summed weights, in float32 (a map is not compared with nnU-Net's
    float16 logits). A window with no region voxel adds its weight and a zero map unexplained.

    Args:
        data: (C, z, y, x) float32 on the CPU, nnU-Net's preprocessed image.
        region: bool (z, y, x): the voxels whose target logits enter the score.
        done, total: windows already run and to run in all (progress over several folds).

    Returns:
        (z, y, x) float32 map >= 0 on the CPU, ``data``'s grid.
    """
    from acvl_utils.cropping_and_padding.padding import pad_nd_image
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    padded, revert = pad_nd_image(data, patch, "constant", {"value": 0}, True, None)
    inside = tuple(revert[1:])
    padded_region = torch.zeros(padded.shape[1:], dtype=torch.bool)
    padded_region[inside] = region
    slicers = window_slicers(tuple(padded.shape[1:]), patch)
    total = total or len(slicers)
    gaussian = compute_gaussian(tuple(patch), sigma_scale=1.0 / 8, value_scaling_factor=10, dtype=torch.float32,
                                device=torch.device("cpu"))  # fmt: skip
    cam = torch.zeros(padded.shape[1:], dtype=torch.float32)
    weights = torch.zeros(padded.shape[1:], dtype=torch.float32)
    for i, slicer in enumerate(slicers):
        check_stop(should_stop)
        voxels = slicer[1:]
        window_region = padded_region[voxels]
        if window_region.any():
            cam[voxels] += explain_windows(padded[slicer][None].to(device), window_region[None])[0] * gaussian
        weights[voxels] += gaussian
        report(progress, done + i + 1, total)
    return (cam / weights)[inside]
