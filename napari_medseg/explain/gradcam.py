"""Grad-CAM and Grad-CAM++ for segmentation networks, on one image or a whole volume.

The score explained is a :class:`~napari_medseg.explain.targets.CamTarget` (by default the
sum of one class's logits over the voxels predicted as that class); the maps differ between
methods only in :meth:`CamMethod.channel_weights`. Everything runs in eval mode inside
context managers that remove the hook and restore train/eval flags, also on errors; the
gradients are taken with :func:`torch.autograd.grad` with respect to the layer's output only,
so no parameter's ``.grad`` is touched and no ``requires_grad`` flag is changed.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import operator
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..control import check_stop, report
from .hooks import capture_activations, eval_mode, first_tensor, resolve_layer
from .targets import CamTarget, SegmentationTarget

__all__ = [
    "METHODS",
    "CamMethod",
    "GradCAM",
    "GradCAMPlusPlus",
    "grad_cam",
    "grad_cam_volume",
]

logger = logging.getLogger(__name__)

Reshape = Callable[[torch.Tensor], torch.Tensor]
_INTERP = {1: "linear", 2: "bilinear", 3: "trilinear"}


class CamMethod:
    """A class-activation-map method: ``map = ReLU(sum_c w_c * A_c)``.

    Subclasses override :meth:`channel_weights` only.
    """

    name = ""

    def channel_weights(self, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """Channel weights (B, C) from activations and score gradients, both (B, C, *G)."""
        raise NotImplementedError

    def __call__(self, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """The map (B, *G) at the layer's resolution, non-negative."""
        weights = self.channel_weights(activations, grads)
        weights = weights.reshape(*weights.shape, *(1,) * (activations.dim() - 2))
        return torch.relu((weights * activations).sum(dim=1))


class GradCAM(CamMethod):
    """Selvaraju et al. 2017: ``w_c`` = spatial mean of the gradient of channel c."""

    name = "gradcam"

    def channel_weights(self, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return grads.flatten(2).mean(dim=2)


class GradCAMPlusPlus(CamMethod):
    """Chattopadhay et al. 2018, closed form for an exponential score:
    ``alpha = g**2 / (2 g**2 + sum(A) g**3)`` (0 where the denominator is 0) and
    ``w_c = sum over positions of alpha * ReLU(g)``, with ``sum(A)`` over channel c's map."""

    name = "gradcam++"

    def channel_weights(self, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        g2 = grads.square()
        sum_a = activations.flatten(2).sum(dim=2)
        sum_a = sum_a.reshape(*sum_a.shape, *(1,) * (activations.dim() - 2))
        denom = 2 * g2 + sum_a * g2 * grads
        nonzero = denom != 0
        alpha = torch.where(nonzero, g2 / torch.where(nonzero, denom, torch.ones_like(denom)), 0)
        return (alpha * torch.relu(grads)).flatten(2).sum(dim=2)


#: Method name -> class; ``method=`` also takes a :class:`CamMethod` instance.
METHODS: dict[str, type[CamMethod]] = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus}


def _method(method: str | CamMethod) -> CamMethod:
    if isinstance(method, CamMethod):
        return method
    if method not in METHODS:
        raise ValueError(f"method {method!r} is unknown; choose from {sorted(METHODS)}")
    return METHODS[method]()


def _default_layer(model: nn.Module) -> str:
    from ..models.registry import gradcam_layer_name  # models load torch; explain already has

    name = gradcam_layer_name(model)
    if not name:
        raise ValueError(
            f"no Grad-CAM layer given and {type(model).__name__} names no default "
            "(no .config.gradcam_layer or default_gradcam_layer); pass layer= a module "
            "or a dotted module name"
        )
    return name


class _Explainer:
    """One model prepared for Grad-CAM: eval mode, a hook on the layer, a method.

    Use as a context manager; :meth:`run` may then be called once per batch.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        layer: nn.Module | str | None,
        method: str | CamMethod,
        reshape: Reshape | None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model {model!r} must be a torch.nn.Module")
        self.model = model
        self.method = _method(method)
        self.layer_name, self.layer = resolve_layer(
            model, _default_layer(model) if layer is None else layer
        )
        self.reshape = reshape
        param = next(itertools.chain(model.parameters(), model.buffers()), None)
        self.device = param.device if param is not None else torch.device("cpu")
        floating = param is not None and param.dtype.is_floating_point
        self.dtype = param.dtype if floating else torch.float32
        self._stack = contextlib.ExitStack()
        self._record = None

    def __enter__(self) -> _Explainer:
        with contextlib.ExitStack() as stack:
            stack.enter_context(eval_mode(self.model))
            self._record = stack.enter_context(capture_activations(self.layer))
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._record = None
        self._stack.close()

    def _as_input(self, array: np.ndarray | torch.Tensor) -> torch.Tensor:
        """A fresh tensor on the model's device and dtype (the caller's data is never shared)."""
        if isinstance(array, torch.Tensor):
            return array.detach().to(device=self.device, dtype=self.dtype, copy=True)
        tensor = torch.from_numpy(np.array(array, dtype=np.float32, copy=True))
        return tensor.to(device=self.device, dtype=self.dtype)

    def run(
        self, batch: np.ndarray | torch.Tensor, target: CamTarget
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps (B, *S) float32 on the CPU and the bool (B,) of samples with nothing to explain.

        ``batch`` is (B, C, *S); it is copied, and the copy gets ``requires_grad`` so that
        frozen models work too (also under the caller's ``torch.inference_mode``).
        """
        assert self._record is not None, "use _Explainer as a context manager"
        self._record.clear()
        try:
            with torch.inference_mode(False), torch.enable_grad():
                x = self._as_input(batch).requires_grad_(True)
                logits = first_tensor(self.model(x))
                if logits.dim() != x.dim() or logits.shape[0] != x.shape[0]:
                    raise ValueError(
                        f"model output shape {tuple(logits.shape)} must be (B, K, *spatial) "
                        f"for input {tuple(x.shape)}"
                    )
                raw = self._record.single(self.layer_name)
                if not raw.requires_grad:
                    raise ValueError(
                        f"layer {self.layer_name!r} output does not depend on the input"
                    )
                scores = target.score(logits)
                (grads,) = torch.autograd.grad(scores.sum(), raw, allow_unused=True)
            empty = target.empty(logits).detach().cpu()
            acts = raw.detach()
            grads = torch.zeros_like(acts) if grads is None else grads.detach()
        finally:
            self._record.clear()
        if self.reshape is not None:
            acts, grads = self.reshape(acts), self.reshape(grads)
        spatial = tuple(logits.shape[2:])
        if acts.dim() != logits.dim() or acts.shape[0] != logits.shape[0]:
            raise ValueError(
                f"layer {self.layer_name!r} output shape {tuple(acts.shape)} is not "
                f"(B, C, {len(spatial)} spatial sizes); for a token sequence (B, N, D) pass "
                "reshape= (e.g. napari_medseg.explain.tokens_to_grid(grid))"
            )
        cam = self.method(acts.float(), grads.float())
        cam = F.interpolate(
            cam[:, None], size=spatial, mode=_INTERP[len(spatial)], align_corners=False
        )[:, 0]
        cam = cam.clamp_min(0)
        cam[empty.to(cam.device)] = 0
        return cam.float().cpu(), empty


def _region_tensor(region: object, spatial: Sequence[int], what: str) -> torch.Tensor | None:
    if region is None:
        return None
    if isinstance(region, torch.Tensor):
        region = region.detach().cpu().numpy()
    mask = np.asarray(region)
    if mask.shape != tuple(spatial):
        raise ValueError(f"region shape {mask.shape} must be the {what} shape {tuple(spatial)}")
    return torch.from_numpy(np.array(mask, dtype=bool, copy=True))


def _model_attr(model: nn.Module, name: str) -> int | None:
    value = getattr(getattr(model, "config", None), name, None)
    if value is None:
        value = getattr(model, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def grad_cam(
    model: nn.Module,
    image: np.ndarray | torch.Tensor,
    *,
    target_class: int,
    layer: nn.Module | str | None = None,
    region: np.ndarray | torch.Tensor | None = None,
    method: str | CamMethod = "gradcam",
    reshape: Reshape | None = None,
) -> np.ndarray:
    """Grad-CAM of one segmentation class for one image.

    Args:
        model: any module mapping (B, C, *S) to logits (B, K, *S) (a tuple/list output: its
            first tensor). Run in eval mode; its modes, hooks and gradients are left as found.
        image: (C, *S), e.g. (5, 192, 224) for a 2.5D model or (1, 64, 64, 64) for a 3D
            one; numpy or torch, never modified.
        target_class: logit channel k to explain (0 is background).
        layer: module or dotted name, e.g. ``"decoder.levels.0"``; default: the model's
            configured or architectural default (:func:`~napari_medseg.models.gradcam_layer_name`).
            A tuple/list output counts by its first tensor. Avoid a convolution directly
            followed by instance/group normalisation: the gradient through the norm has
            (near) zero spatial mean, so Grad-CAM's weights and map vanish there.
        region: bool mask of shape S; the score is the sum of class k's logits over it.
            Default: the voxels predicted as k (``argmax == k``); if there are none the map
            is all zeros and a warning is logged.
        method: ``"gradcam"`` or ``"gradcam++"`` (or a :class:`CamMethod`).
        reshape: for layers whose output is not (B, C, *G), e.g. tokens (B, N, D): a
            function applied to the activations and to their gradients alike, returning
            (B, C, *G); it must only rearrange values (see ``tokens_to_grid``).
            TransUNet's ``bottleneck.token_grid`` already outputs (B, E, *G).

    Returns:
        float32 map of shape S, >= 0, in the score's units (not normalised): the layer map
        upsampled bi/trilinearly (``align_corners=False``).

    Raises:
        ValueError: bad image or region shape, unknown layer or method, no default layer,
            ``target_class`` not an output class.
    """
    target = SegmentationTarget(target_class)
    shape = tuple(image.shape)
    dims = _model_attr(model, "spatial_dims")
    if len(shape) < 2 or (dims is not None and len(shape) != dims + 1):
        want = "(C, *spatial)" if dims is None else f"(C, {dims} spatial sizes)"
        raise ValueError(f"image shape {shape} must be {want}")
    target.region = _region_tensor(region, shape[1:], "image's spatial")
    with _Explainer(model, layer=layer, method=method, reshape=reshape) as explainer:
        cam, empty = explainer.run(image[None], target)
    if bool(empty[0]):
        logger.warning(
            "Grad-CAM: %s is empty (no voxel %s); the map is all zeros",
            "the region" if region is not None else f"class {target_class}",
            "in it" if region is not None else "predicted as that class",
        )
    return cam[0].numpy()


def grad_cam_volume(
    model: nn.Module,
    volume_array: np.ndarray,
    *,
    target_class: int,
    layer: nn.Module | str | None = None,
    region: np.ndarray | None = None,
    method: str | CamMethod = "gradcam",
    slice_axis: int = 0,
    batch: int = 8,
    context_offsets: Sequence[int] = (0,),
    progress: Callable[[int, int], object] | None = None,
    should_stop: Callable[[], bool] | None = None,
    spatial_dims: int | None = None,
    window: Sequence[int] | int | None = None,
    reshape: Reshape | None = None,
) -> np.ndarray:
    """Grad-CAM over a (z, y, x) volume: per slice for 2D models, per window for 3D ones.

    2D models (the default): slice k along ``slice_axis`` is explained with the input
    channels ``volume[k + o] for o in context_offsets`` (zeros outside the volume), e.g.
    ``(-4, -2, 0, 2, 4)`` for a 2.5D U-Net with 5 input channels; ``batch`` slices per
    forward pass; the region of slice k is ``region``'s slice k.
    3D models (``spatial_dims=3`` or ``model.config.spatial_dims == 3``): windows of size
    ``window`` (default: the config's ``patch_size``, else the whole volume; clipped to the
    volume) with overlap 0.5, ``batch`` windows per pass, maps blended with Gaussian weights
    (sigma = window / 8); the model takes one input channel.

    Args:
        volume_array: (z, y, x) intensities, never modified.
        region: optional bool mask of the volume's shape; default per slice/window: the
            voxels predicted as ``target_class`` (empty ones give zeros).
        progress: ``progress(done, total)`` after each batch (slices or windows).
        should_stop: checked before each batch; when it returns True,
            :class:`napari_medseg.control.Cancelled` is raised (hooks and modes restored).
        Others: as in :func:`grad_cam`.

    Returns:
        float32 (z, y, x) map, >= 0, the volume's shape.

    Raises:
        Cancelled: ``should_stop()`` returned True.
        ValueError: bad shapes, offsets not matching the model's input channels, bad batch
            or window, and the errors of :func:`grad_cam`.
    """
    volume = np.asarray(volume_array)
    if volume.ndim != 3:
        raise ValueError(f"volume shape {volume.shape} must be (z, y, x)")
    if region is not None:
        region = np.asarray(region)
        if region.shape != volume.shape:
            raise ValueError(
                f"region shape {region.shape} must be the volume shape {volume.shape}"
            )
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch {batch!r} must be a positive int")
    dims = spatial_dims if spatial_dims is not None else _model_attr(model, "spatial_dims") or 2
    if dims not in (2, 3):
        raise ValueError(f"spatial_dims {dims!r} must be 2 or 3")
    offsets = tuple(int(o) for o in context_offsets)
    in_channels = _model_attr(model, "in_channels")
    channels = len(offsets) if dims == 2 else 1
    if not offsets or (dims == 3 and offsets != (0,)):
        raise ValueError(
            f"context_offsets {tuple(context_offsets)!r} must be non-empty (2D), or (0,) (3D)"
        )
    if in_channels is not None and in_channels != channels:
        raise ValueError(
            f"the model takes {in_channels} input channels but context_offsets "
            f"{offsets} give {channels}"
        )
    target = SegmentationTarget(target_class)
    with _Explainer(model, layer=layer, method=method, reshape=reshape) as explainer:
        if dims == 2:
            out, empty = _slices(
                explainer, volume, region, target, slice_axis, batch, offsets, progress,
                should_stop,
            )  # fmt: skip
        else:
            out, empty = _windows(
                explainer, volume, region, target, _window(model, window, volume.shape),
                batch, progress, should_stop,
            )  # fmt: skip
    done, total = int(empty.sum()), empty.size
    if done == total:
        logger.warning(
            "Grad-CAM: nothing to explain for class %d in any of %d %s; the map is all zeros",
            target_class, total, "slices" if dims == 2 else "windows",
        )  # fmt: skip
    elif done:
        logger.debug("Grad-CAM: %d of %d parts had an empty region", done, total)
    return out


def _slices(explainer, volume, region, target, slice_axis, batch, offsets, progress, should_stop):
    if not -3 <= slice_axis < 3:
        raise ValueError(f"slice_axis {slice_axis!r} must be 0, 1 or 2")
    vol = np.moveaxis(volume, slice_axis, 0)
    reg = None if region is None else np.moveaxis(region, slice_axis, 0)
    n, *plane = vol.shape
    out = np.zeros(vol.shape, dtype=np.float32)
    empty = np.zeros(n, dtype=bool)
    for start in range(0, n, batch):
        check_stop(should_stop)
        ks = np.arange(start, min(start + batch, n))
        x = np.zeros((len(ks), len(offsets), *plane), dtype=np.float32)
        for c, off in enumerate(offsets):
            src = ks + off
            ok = (src >= 0) & (src < n)
            x[ok, c] = vol[src[ok]]
        target.region = None if reg is None else torch.from_numpy(reg[ks].astype(bool))
        cam, emp = explainer.run(x, target)
        out[ks], empty[ks] = cam.numpy(), emp.numpy()
        report(progress, int(ks[-1]) + 1, n)
    return np.moveaxis(out, 0, slice_axis), empty


def _window(model, window, shape) -> tuple[int, ...]:
    if window is None:
        patch = tuple(getattr(getattr(model, "config", None), "patch_size", ()) or ())
        window = patch if len(patch) == 3 else shape
    elif isinstance(window, (int, np.integer)):
        window = (window,) * 3
    try:
        sizes = tuple(operator.index(w) for w in window)
    except TypeError:
        sizes = ()
    if len(sizes) != 3 or min(sizes) < 1:
        raise ValueError(f"window {window!r} must be 3 positive ints (z, y, x)")
    return tuple(min(w, s) for w, s in zip(sizes, shape))


def _starts(size: int, win: int, overlap: float = 0.5) -> list[int]:
    if win >= size:
        return [0]
    count = math.ceil((size - win) / (win * (1 - overlap))) + 1
    return [round(i * (size - win) / (count - 1)) for i in range(count)]


def _gaussian(window: Sequence[int]) -> np.ndarray:
    weights = np.ones((), dtype=np.float64)
    for w in window:
        centre, sigma = (w - 1) / 2, w / 8
        axis = np.exp(-0.5 * ((np.arange(w) - centre) / sigma) ** 2)
        weights = np.multiply.outer(weights, axis)
    weights /= weights.max()
    return np.maximum(weights, 1e-6).astype(np.float32)


def _windows(explainer, volume, region, target, window, batch, progress, should_stop):
    corners = list(itertools.product(*(_starts(s, w) for s, w in zip(volume.shape, window))))
    weights = _gaussian(window)
    acc = np.zeros(volume.shape, dtype=np.float32)
    norm = np.zeros(volume.shape, dtype=np.float32)
    empty = np.zeros(len(corners), dtype=bool)
    for start in range(0, len(corners), batch):
        check_stop(should_stop)
        chunk = corners[start : start + batch]
        boxes = [tuple(slice(c, c + w) for c, w in zip(corner, window)) for corner in chunk]
        x = np.stack([volume[box] for box in boxes])[:, None].astype(np.float32)
        target.region = (
            None if region is None else torch.from_numpy(np.stack([region[b] for b in boxes]))
        )
        cam, emp = explainer.run(x, target)
        for box, m in zip(boxes, cam.numpy()):
            acc[box] += weights * m
            norm[box] += weights
        empty[start : start + len(chunk)] = emp.numpy()
        report(progress, start + len(chunk), len(corners))
    return acc / norm, empty
