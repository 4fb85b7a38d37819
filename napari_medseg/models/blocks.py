"""Layer factories chosen by ``spatial_dims``, and the convolution block the networks share.

Every factory takes ``spatial_dims`` (2 or 3) first, so a network is written once and
built as 2D or 3D: tensors are (B, C, H, W) for 2D and (B, C, D, H, W) for 3D.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

__all__ = [
    "NORMS",
    "ConvBlock",
    "check_spatial_dims",
    "conv",
    "dropout",
    "dropout_modules",
    "match_size",
    "norm",
    "pool",
    "transposed_conv",
    "upsample",
]

NORMS = ("group", "instance", "batch")
_MAX_GROUPS = 8


def check_spatial_dims(spatial_dims: int) -> int:
    """Return ``spatial_dims`` if it is 2 or 3, else raise ValueError quoting it."""
    if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims {spatial_dims!r} must be 2 or 3")
    return int(spatial_dims)


def conv(
    spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True
) -> nn.Module:
    """Same-size convolution (stride 1, padding ``kernel_size // 2``)."""
    cls = (nn.Conv2d, nn.Conv3d)[check_spatial_dims(spatial_dims) - 2]
    return cls(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


def transposed_conv(spatial_dims: int, in_channels: int, out_channels: int) -> nn.Module:
    """Learned 2x upsampling: (B, C_in, *S) -> (B, C_out, *2S)."""
    cls = (nn.ConvTranspose2d, nn.ConvTranspose3d)[check_spatial_dims(spatial_dims) - 2]
    return cls(in_channels, out_channels, kernel_size=2, stride=2)


def upsample(
    spatial_dims: int, in_channels: int, out_channels: int, mode: str = "transpose"
) -> nn.Module:
    """2x upsampling: ``"transpose"`` (learned) or ``"linear"`` (bi/trilinear + 1x1 conv)."""
    if mode == "transpose":
        return transposed_conv(spatial_dims, in_channels, out_channels)
    if mode == "linear":
        interp = ("bilinear", "trilinear")[check_spatial_dims(spatial_dims) - 2]
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode=interp, align_corners=False),
            conv(spatial_dims, in_channels, out_channels, kernel_size=1),
        )
    raise ValueError(f"upsample mode {mode!r} must be 'transpose' or 'linear'")


def norm(name: str, spatial_dims: int, channels: int) -> nn.Module:
    """Normalisation layer: ``"group"`` (up to 8 groups), ``"instance"`` or ``"batch"``."""
    dims = check_spatial_dims(spatial_dims)
    if name == "group":
        return nn.GroupNorm(math.gcd(channels, _MAX_GROUPS), channels)
    if name == "instance":
        return (nn.InstanceNorm2d, nn.InstanceNorm3d)[dims - 2](channels, affine=True)
    if name == "batch":
        return (nn.BatchNorm2d, nn.BatchNorm3d)[dims - 2](channels)
    raise ValueError(f"norm {name!r} must be one of {NORMS}")


def dropout(spatial_dims: int, p: float, *, channelwise: bool = False) -> nn.Module:
    """Dropout with probability ``p`` (element-wise, or whole channels when ``channelwise``).

    A module with ``p == 0`` is a no-op in training and eval mode alike, but stays in place
    so that MC-dropout sampling can raise ``p`` later.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability {p!r} must be in [0, 1)")
    if channelwise:
        return (nn.Dropout2d, nn.Dropout3d)[check_spatial_dims(spatial_dims) - 2](p)
    check_spatial_dims(spatial_dims)
    return nn.Dropout(p)


def pool(spatial_dims: int) -> nn.Module:
    """2x max pooling that rounds odd sizes up: (B, C, *S) -> (B, C, *ceil(S / 2))."""
    cls = (nn.MaxPool2d, nn.MaxPool3d)[check_spatial_dims(spatial_dims) - 2]
    return cls(kernel_size=2, stride=2, ceil_mode=True)


def match_size(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop (at the far end) or zero-pad ``x`` (B, C, *S) to spatial ``size``."""
    if list(x.shape[2:]) == list(size):
        return x
    x = x[(slice(None), slice(None), *(slice(0, n) for n in size))]
    pad: list[int] = []
    for have, want in zip(reversed(x.shape[2:]), reversed(list(size))):
        pad += [0, want - have]
    return nn.functional.pad(x, pad) if any(pad) else x


class ConvBlock(nn.Module):
    """Two 3x3 convolutions with norm and LeakyReLU, dropout between them.

    With ``residual=True`` the input is added back (through a 1x1 convolution when the
    channel count changes) before the last activation.

    Shapes:
        (B, C_in, H, W) -> (B, C_out, H, W) for 2D; (B, C_in, D, H, W) -> (B, C_out, D, H, W).

    Submodules are named ``conv1``, ``norm1``, ``act1``, ``dropout``, ``conv2``, ``norm2``,
    ``act2`` (and ``skip``); ``dropout`` is ``nn.Identity`` when the block is not a dropout site.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        norm_name: str = "group",
        dropout_p: float | None = None,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = conv(spatial_dims, in_channels, out_channels)
        self.norm1 = norm(norm_name, spatial_dims, out_channels)
        self.act1 = nn.LeakyReLU(0.01)
        self.dropout = nn.Identity() if dropout_p is None else dropout(spatial_dims, dropout_p)
        self.conv2 = conv(spatial_dims, out_channels, out_channels)
        self.norm2 = norm(norm_name, spatial_dims, out_channels)
        self.act2 = nn.LeakyReLU(0.01)
        self.residual = residual
        if residual and in_channels != out_channels:
            self.skip: nn.Module = conv(spatial_dims, in_channels, out_channels, kernel_size=1)
        else:
            self.skip = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after_dropout(*self.before_dropout(x))

    def before_dropout(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The deterministic first half: (activation before ``dropout``, residual term or None).

        MC-dropout sampling computes it once and draws only :meth:`after_dropout` S times.
        """
        return self.act1(self.norm1(self.conv1(x))), (self.skip(x) if self.residual else None)

    def after_dropout(self, y: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        """``dropout``, second convolution and norm, residual, activation."""
        y = self.norm2(self.conv2(self.dropout(y)))
        if residual is not None:
            y = y + residual
        return self.act2(y)


def dropout_modules(model: nn.Module, sites: Iterable[str] | None = None) -> list[nn.Module]:
    """The dropout modules of ``model`` inside the named modules ``sites`` (all when None).

    Raises:
        ValueError: a site names no module of ``model`` (the bad name is quoted).
    """
    named = dict(model.named_modules())
    roots = [model] if sites is None else []
    for site in sites or ():
        if site not in named:
            raise ValueError(f"dropout site {site!r} is not a module of {type(model).__name__}")
        roots.append(named[site])
    found: dict[int, nn.Module] = {}
    for root in roots:
        for module in root.modules():
            if isinstance(module, nn.modules.dropout._DropoutNd):
                found.setdefault(id(module), module)
    return list(found.values())
