"""TransUNet: a CNN encoder, a transformer over the coarsest token grid, a U-Net decoder.

Learned positional embeddings live on the token grid seen in training (``train_grid``) and
are resampled (bi/trilinear) when an input yields another grid, so any input size works.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .blocks import conv, norm, pool
from .unet import EncoderDecoder, UNetDecoder, UNetEncoder, check_common_args

__all__ = ["TokenGrid", "TransUNet", "TransformerBlock", "TransformerBottleneck"]


class TokenGrid(nn.Module):
    """Tokens back to a channel-first grid: (B, N, E) -> (B, E, *grid), N = prod(grid).

    It has no parameters; it exists so that hooks (Grad-CAM) can reach "the transformer
    output reshaped to its token grid" by module name.
    """

    def forward(self, tokens: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        b, n, e = tokens.shape
        return tokens.transpose(1, 2).reshape(b, e, *grid)


class TransformerBlock(nn.Module):
    """Pre-norm transformer layer: (B, N, E) -> (B, N, E).

    ``drop_attn`` and ``drop_mlp`` are dropout modules when the block is a dropout site,
    ``nn.Identity`` otherwise.
    """

    def __init__(self, embed_dim: int, num_heads: int, mlp_ratio: float, dropout_p: float | None):
        super().__init__()
        hidden = max(1, round(embed_dim * mlp_ratio))
        self.norm1 = nn.LayerNorm(embed_dim)
        self.attn = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, hidden), nn.GELU(), nn.Linear(hidden, embed_dim)
        )

        def drop() -> nn.Module:
            return nn.Identity() if dropout_p is None else nn.Dropout(dropout_p)

        self.drop_attn = drop()
        self.drop_mlp = drop()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.drop_attn(self.attn(h, h, h, need_weights=False)[0])
        return x + self.drop_mlp(self.mlp(self.norm2(x)))


class TransformerBottleneck(nn.Module):
    """Pool, embed, transformer, back to a grid, project.

    (B, C_in, *S) -> (B, C_out, *G) with G = ceil(S / 2); the transformer sees prod(G)
    tokens of width ``embed_dim``. ``token_grid`` outputs (B, embed_dim, *G).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        train_grid: tuple[int, ...],
        norm_name: str,
        dropout_p: float | None,
    ):
        super().__init__()
        self.train_grid = train_grid
        self._interp = ("bilinear", "trilinear")[spatial_dims - 2]
        self.pool = pool(spatial_dims)
        self.embed = conv(spatial_dims, in_channels, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *train_grid))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(
            TransformerBlock(embed_dim, num_heads, mlp_ratio, dropout_p) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.token_grid = TokenGrid()
        self.proj = nn.Sequential(
            conv(spatial_dims, embed_dim, out_channels),
            norm(norm_name, spatial_dims, out_channels),
            nn.LeakyReLU(0.01),
        )

    def positional_embedding(self, grid: Sequence[int]) -> torch.Tensor:
        """(1, E, *grid): the learned embedding, resampled when ``grid != train_grid``."""
        if tuple(grid) == self.train_grid:
            return self.pos_embed
        return nn.functional.interpolate(
            self.pos_embed, size=tuple(grid), mode=self._interp, align_corners=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(self.pool(x))
        grid = x.shape[2:]
        tokens = (x + self.positional_embedding(grid)).flatten(2).transpose(1, 2)
        for block in self.blocks:
            tokens = block(tokens)
        return self.proj(self.token_grid(self.norm(tokens), grid))


class TransUNet(EncoderDecoder):
    """TransUNet for 2D slices or 3D volumes.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels C.
        out_channels: classes K (logits, background included).
        features: CNN channels per level, finest first; the last is the channel count the
            transformer output is projected to before decoding. ``len(features) - 1``
            downsamplings, so the token grid is ``ceil(S / 2**(len(features) - 1))``.
        embed_dim: token width E (divisible by ``num_heads``).
        depth: transformer layers.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / E.
        dropout: probability of the dropout modules at ``dropout_sites``.
        dropout_sites: any of ``"encoder"``, ``"bottleneck"`` (the transformer), ``"decoder"``.
        train_grid: token grid of the training patches (int: the same on each axis), where
            the positional embedding is learned; e.g. patch 64 x 64 and 3 downsamplings -> 8.
        norm: ``"group"``, ``"instance"`` or ``"batch"`` for the CNN parts.
        residual: residual connections in the CNN blocks.
        deep_supervision: as in :class:`~napari_medseg.models.unet.UNet`.

    Shapes:
        2D: (B, C, H, W) -> (B, K, H, W), e.g. (2, 3, 64, 48) -> (2, K, 64, 48).
        3D: (B, C, D, H, W) -> (B, K, D, H, W), e.g. (1, 1, 32, 33, 31) -> (1, K, 32, 33, 31).

    Modules: ``encoder``, ``bottleneck`` (:class:`TransformerBottleneck`, whose
    ``token_grid`` is the default Grad-CAM layer), ``decoder``. ``forward(x) ==
    decode(encode(x))``; the last map of :meth:`encode` is the projected transformer output.
    """

    default_gradcam_layer = "bottleneck.token_grid"

    def __init__(
        self,
        *,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        features: Sequence[int] = (16, 32, 64, 128),
        embed_dim: int = 128,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        dropout_sites: Sequence[str] = ("decoder",),
        train_grid: int | Sequence[int] = 8,
        norm: str = "group",
        residual: bool = False,
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
        for name, value in (("embed_dim", embed_dim), ("depth", depth), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} {value!r} must be a positive int")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        if not isinstance(mlp_ratio, (int, float)) or mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio {mlp_ratio!r} must be positive")
        grid = _check_grid(train_grid, spatial_dims)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels

        def p(site: str) -> float | None:
            return float(dropout) if site in sites else None

        common = {"norm_name": norm, "residual": bool(residual)}
        self.encoder = UNetEncoder(
            spatial_dims, in_channels, feats[:-1], dropout_p=p("encoder"), **common
        )
        self.bottleneck = TransformerBottleneck(
            spatial_dims,
            feats[-2],
            feats[-1],
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=float(mlp_ratio),
            train_grid=grid,
            norm_name=norm,
            dropout_p=p("bottleneck"),
        )
        self.decoder = UNetDecoder(
            spatial_dims,
            feats,
            out_channels,
            deep_supervision=bool(deep_supervision),
            dropout_p=p("decoder"),
            **common,
        )


def _check_grid(train_grid: int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    grid = (train_grid,) * spatial_dims if isinstance(train_grid, int) else tuple(train_grid)
    if len(grid) != spatial_dims or not all(
        isinstance(g, int) and not isinstance(g, bool) and g > 0 for g in grid
    ):
        raise ValueError(
            f"train_grid {train_grid!r} must be a positive int or {spatial_dims} positive ints"
        )
    return grid
