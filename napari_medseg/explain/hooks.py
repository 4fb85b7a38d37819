"""Hook plumbing for Grad-CAM that leaves the caller's model as it found it.

:func:`capture_activations` records a module's output during a forward pass and always
removes its hook; :func:`eval_mode` runs a model in evaluation mode and restores every
submodule's own ``training`` flag afterwards (so an MC-dropout set-up survives).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

__all__ = [
    "ActivationRecord",
    "capture_activations",
    "eval_mode",
    "first_tensor",
    "resolve_layer",
    "tokens_to_grid",
]


def first_tensor(output: object) -> torch.Tensor:
    """``output`` itself when it is a tensor, else the first tensor of a tuple/list.

    Raises:
        ValueError: when ``output`` holds no tensor.
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    raise ValueError(f"layer output of type {type(output).__name__} holds no tensor")


def resolve_layer(model: nn.Module, layer: nn.Module | str) -> tuple[str, nn.Module]:
    """``(name, module)`` for a module of ``model`` given by object or dotted name.

    Raises:
        ValueError: the name is not a module of ``model`` (a few valid names are quoted), or
            the module object is not part of ``model``.
    """
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name, module
        raise ValueError(f"layer {type(layer).__name__} is not a submodule of the model")
    if not isinstance(layer, str):
        raise ValueError(f"layer {layer!r} must be a module or a dotted module name")
    modules = dict(model.named_modules())
    if layer not in modules:
        names = [n for n in modules if n]
        hint = ", ".join(repr(n) for n in names[:12]) + (", ..." if len(names) > 12 else "")
        raise ValueError(f"layer {layer!r} is not a module of the model; some names: {hint}")
    return layer, modules[layer]


class ActivationRecord:
    """Outputs a hooked module produced, in call order (first tensor of each output)."""

    def __init__(self) -> None:
        self.outputs: list[torch.Tensor] = []

    def clear(self) -> None:
        self.outputs.clear()

    def single(self, name: str) -> torch.Tensor:
        """The one output of the last forward pass.

        Raises:
            ValueError: the layer did not run, or ran more than once (a shared module).
        """
        if len(self.outputs) != 1:
            raise ValueError(
                f"layer {name!r} ran {len(self.outputs)} times in one forward pass; "
                "Grad-CAM needs a module that runs exactly once"
            )
        return self.outputs[0]


@contextlib.contextmanager
def capture_activations(module: nn.Module) -> Iterator[ActivationRecord]:
    """Record ``module``'s outputs while the context is open; the hook is always removed."""
    record = ActivationRecord()

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        record.outputs.append(first_tensor(output))

    handle = module.register_forward_hook(hook)
    try:
        yield record
    finally:
        handle.remove()
        record.clear()


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode; restore each submodule's ``training`` flag on exit."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


def tokens_to_grid(grid: Sequence[int], *, prefix_tokens: int = 0):
    """A ``reshape`` for token-sequence layers: (B, N, D) -> (B, D, *grid).

    Args:
        grid: the token grid, e.g. ``(14, 14)`` for a ViT on 224 px with 16 px patches.
        prefix_tokens: leading tokens that are not grid cells (e.g. 1 for a class token),
            dropped before reshaping.

    Returns:
        A function to pass as ``reshape=`` to :func:`~napari_medseg.explain.grad_cam`.
    """
    grid = tuple(int(g) for g in grid)

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 3:
            raise ValueError(f"token output shape {tuple(tokens.shape)} must be (B, N, D)")
        cells = tokens[:, prefix_tokens:]
        b, n, d = cells.shape
        if n != math.prod(grid):
            raise ValueError(f"{n} tokens do not fill the grid {grid}")
        return cells.transpose(1, 2).reshape(b, d, *grid)

    return reshape
