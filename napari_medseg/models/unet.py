"""U-Net for 2D slices or 3D volumes through one ``spatial_dims`` code path.

Odd sizes need no padding: pooling rounds sizes up and every upsampled map is cropped to its
skip connection, so the logits always have the input's spatial shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .blocks import NORMS, ConvBlock, check_spatial_dims, conv, match_size, pool, upsample

__all__ = ["DROPOUT_SITES", "EncoderDecoder", "UNet", "UNetDecoder", "UNetEncoder"]

#: Where dropout modules may be placed (``dropout_sites``); also the top-level module names.
DROPOUT_SITES = ("encoder", "bottleneck", "decoder")

Features = list[torch.Tensor]
Logits = torch.Tensor | tuple[torch.Tensor, ...]


def check_common_args(
    *,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    features: Sequence[int],
    norm: str,
    dropout: float,
    dropout_sites: Sequence[str],
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Validate the arguments U-Net and TransUNet share; return ``features``, ``dropout_sites``.

    Raises:
        ValueError: quoting the first bad value.
    """
    check_spatial_dims(spatial_dims)
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} {value!r} must be a positive int")
    if isinstance(features, (str, bytes)) or not isinstance(features, Sequence):
        raise ValueError(f"features {features!r} must be a sequence of ints")
    feats = tuple(features)
    if len(feats) < 2 or not all(
        isinstance(f, int) and not isinstance(f, bool) and f > 0 for f in feats
    ):
        raise ValueError(f"features {features!r} must be at least 2 positive ints")
    if norm not in NORMS:
        raise ValueError(f"norm {norm!r} must be one of {NORMS}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"dropout {dropout!r} must be a probability in [0, 1)")
    if isinstance(dropout_sites, str):
        raise ValueError(f"dropout_sites {dropout_sites!r} must be a sequence of site names")
    sites = tuple(dropout_sites)
    bad = [s for s in sites if s not in DROPOUT_SITES]
    if bad:
        raise ValueError(f"dropout_sites {bad!r} unknown; choose from {DROPOUT_SITES}")
    return feats, sites


class DownLevel(nn.Module):
    """Optional 2x pooling then a :class:`ConvBlock`: (B, C_in, *S) -> (B, C_out, *ceil(S/2))."""

    def __init__(self, spatial_dims: int, in_ch: int, out_ch: int, *, downsample: bool, **block):
        super().__init__()
        self.pool = pool(spatial_dims) if downsample else nn.Identity()
        self.block = ConvBlock(spatial_dims, in_ch, out_ch, **block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.pool(x))


class UpLevel(nn.Module):
    """2x upsampling, crop to the skip, concatenate, :class:`ConvBlock`.

    ``forward(x, skip)``: x (B, C_in, *S), skip (B, C_out, *T) with T <= 2S -> (B, C_out, *T).
    """

    def __init__(self, spatial_dims: int, in_ch: int, out_ch: int, **block):
        super().__init__()
        self.up = upsample(spatial_dims, in_ch, out_ch)
        self.block = ConvBlock(spatial_dims, 2 * out_ch, out_ch, **block)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(self.block_input(x, skip))

    def block_input(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Upsampled ``x`` cropped to ``skip`` and concatenated after it: (B, 2 C_out, *T)."""
        return torch.cat([skip, match_size(self.up(x), skip.shape[2:])], dim=1)


class UNetEncoder(nn.Module):
    """The contracting path: ``levels[i]`` works at 1 / 2**i of the input size.

    ``forward(x)`` returns one feature map per level, finest first: for 2D input
    (B, C, H, W) and ``features=(16, 32)``, shapes (B, 16, H, W) and (B, 32, ceil(H/2), ...).
    """

    def __init__(self, spatial_dims: int, in_channels: int, features: Sequence[int], **block):
        super().__init__()
        chans = (in_channels, *features)
        self.levels = nn.ModuleList(
            DownLevel(spatial_dims, chans[i], chans[i + 1], downsample=i > 0, **block)
            for i in range(len(features))
        )

    def forward(self, x: torch.Tensor) -> Features:
        out = []
        for level in self.levels:
            x = level(x)
            out.append(x)
        return out


class UNetDecoder(nn.Module):
    """The expanding path, the 1x1 logit ``head`` and the deep-supervision ``aux_heads``.

    ``forward(features)`` takes the encoder's maps finest first with the bottleneck last
    (channels ``features``) and returns logits (B, K, *S) at the finest map's size ``S``. In
    training mode with deep supervision it returns a tuple: the logits, then one logit map per
    deeper decoder level (finest to coarsest), each upsampled (bi/trilinear) to ``S``.
    """

    def __init__(
        self,
        spatial_dims: int,
        features: Sequence[int],
        out_channels: int,
        *,
        deep_supervision: bool = False,
        **block,
    ):
        super().__init__()
        chans = tuple(reversed(features))  # bottleneck first
        self.levels = nn.ModuleList(
            UpLevel(spatial_dims, chans[i], chans[i + 1], **block) for i in range(len(chans) - 1)
        )
        self.head = conv(spatial_dims, chans[-1], out_channels, kernel_size=1)
        aux = [conv(spatial_dims, c, out_channels, kernel_size=1) for c in chans[1:-1]]
        self.aux_heads = nn.ModuleList(aux if deep_supervision else [])
        self.deep_supervision = deep_supervision
        self._interp = ("bilinear", "trilinear")[spatial_dims - 2]

    def forward(self, features: Features) -> Logits:
        *skips, x = features
        supervised = self.training and self.deep_supervision
        hidden = []  # only for the deep-supervision heads: at inference each level's map goes once used
        for level, skip in zip(self.levels, reversed(skips)):
            x = level(x, skip)
            if supervised:
                hidden.append(x)
        logits = self.head(x)
        if not supervised:
            return logits
        size = logits.shape[2:]
        aux = [
            nn.functional.interpolate(head(h), size=size, mode=self._interp, align_corners=False)
            for head, h in zip(self.aux_heads, hidden[:-1])
        ]
        return (logits, *reversed(aux))


class EncoderDecoder(nn.Module):
    """The forward both networks share: ``forward(x) == decode(encode(x))``.

    Subclasses set ``spatial_dims``, ``in_channels``, ``out_channels`` and the modules
    ``encoder`` (returns skip maps), ``bottleneck`` and ``decoder``. Keeping :meth:`encode`
    and :meth:`decode` public lets MC-dropout sampling run the encoder once and only the
    decoder per sample.
    """

    spatial_dims: int
    in_channels: int
    out_channels: int
    default_gradcam_layer: str = "bottleneck"

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError quoting the shape unless ``x`` is (B, in_channels, *spatial)."""
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"input shape {tuple(x.shape)} must be (B, {self.in_channels}, "
                f"{self.spatial_dims} spatial sizes) for this {self.spatial_dims}D model"
            )

    def encode(self, x: torch.Tensor) -> Features:
        """Encoder and bottleneck: (B, C, *S) -> maps finest first, bottleneck last.

        Map i has shape (B, features[i], *ceil(S / 2**i)).
        """
        self.check_input(x)
        skips = self.encoder(x)
        return [*skips, self.bottleneck(skips[-1])]

    def decode(self, features: Features) -> Logits:
        """The maps from :meth:`encode` -> logits (B, K, *S); a tuple under deep supervision
        in training mode (see :class:`UNetDecoder`)."""
        return self.decoder(features)

    def forward(self, x: torch.Tensor) -> Logits:
        """(B, C, *S) -> logits (B, K, *S)."""
        return self.decode(self.encode(x))


class UNet(EncoderDecoder):
    """U-Net with optional residual blocks, named dropout sites and deep supervision.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels C.
        out_channels: classes K (logits, background included).
        features: channels per level, finest first; the last is the bottleneck, so
            ``len(features) - 1`` 2x downsamplings.
        residual: residual connections inside each conv block.
        norm: ``"group"``, ``"instance"`` or ``"batch"``.
        dropout: probability of the dropout modules at ``dropout_sites`` (0 keeps them
            in place but inactive, ready for MC-dropout sampling).
        dropout_sites: any of ``"encoder"``, ``"bottleneck"``, ``"decoder"``.
        deep_supervision: in training mode, also return logits from deeper decoder levels.

    Shapes:
        2D: (B, C, H, W) -> (B, K, H, W), e.g. (2, 3, 45, 37) -> (2, K, 45, 37).
        3D: (B, C, D, H, W) -> (B, K, D, H, W), e.g. (1, 1, 23, 32, 17) -> (1, K, 23, 32, 17).

    Modules: ``encoder`` (:class:`UNetEncoder`), ``bottleneck`` (a pooling + conv level),
    ``decoder`` (:class:`UNetDecoder`). ``forward(x) == decode(encode(x))``.
    """

    default_gradcam_layer = "decoder.levels.0"

    def __init__(
        self,
        *,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        features: Sequence[int] = (16, 32, 64, 128),
        residual: bool = False,
        norm: str = "group",
        dropout: float = 0.0,
        dropout_sites: Sequence[str] = ("decoder",),
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        feats, sites = check_common_args(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            features=features,
            norm=norm,
            dropout=dropout,
            dropout_sites=dropout_sites,
        )
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels

        def block(site: str) -> dict:
            p = float(dropout) if site in sites else None
            return {"norm_name": norm, "dropout_p": p, "residual": bool(residual)}

        self.encoder = UNetEncoder(spatial_dims, in_channels, feats[:-1], **block("encoder"))
        self.bottleneck = DownLevel(
            spatial_dims, feats[-2], feats[-1], downsample=True, **block("bottleneck")
        )
        self.decoder = UNetDecoder(
            spatial_dims,
            feats,
            out_channels,
            deep_supervision=bool(deep_supervision),
            **block("decoder"),
        )

