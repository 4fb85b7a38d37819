"""Grad-CAM and Grad-CAM++ for segmentation networks, on one image (volumes: :mod:`.volume`).

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
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .hooks import capture_activations, eval_mode, first_tensor, resolve_layer
from .targets import CamTarget, SegmentationTarget

__all__ = [
    "METHODS",
    "CamMethod",
    "GradCAM",
    "GradCAMPlusPlus",
    "grad_cam",
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
