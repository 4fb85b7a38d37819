"""Intensity augmentations shared by the default model's training and fine-tuning.

All functions take and return float tensors (B, C, *spatial) and draw from an explicit
``torch.Generator`` so runs are reproducible.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Intensity normalisation used at training and inference time: voxels above 2% of the
# maximum are the foreground; the 99.5th percentile of the foreground maps to 1.
FOREGROUND_FRACTION = 0.02
NORMALIZE_PERCENTILE = 99.5
_QUANTILE_SAMPLES = 200_000


def normalize_torch(image: torch.Tensor) -> torch.Tensor:
    """Per-sample robust scaling of (B, ...) non-negative images (see module constants)."""
    out = torch.empty_like(image)
    for b in range(image.shape[0]):
        out[b] = image[b] / foreground_scale(image[b])
    return out


def foreground_scale(image: torch.Tensor) -> torch.Tensor:
    """The 99.5th percentile of voxels above 2% of the maximum (1.0 for empty images)."""
    flat = image.reshape(-1).float()
    peak = flat.max()
    if peak <= 0:
        return torch.ones((), dtype=image.dtype)
    foreground = flat[flat > FOREGROUND_FRACTION * peak]
    if foreground.numel() > _QUANTILE_SAMPLES:
        step = foreground.numel() // _QUANTILE_SAMPLES + 1
        foreground = foreground[::step]
    return _upper_quantile(foreground, NORMALIZE_PERCENTILE / 100).clamp_min(1e-6).to(image.dtype)


def _upper_quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """``torch.quantile(values, q)`` (linear interpolation; equal to float rounding) of 1D
    ``values`` for q near 1: only the top ``(1 - q) * n`` values are ranked, a partial sort
    (the 99.5th percentile of 200 000 values: 1.6 ms against the full sort's 22 ms)."""
    count = values.numel()
    position = q * (count - 1)
    below = math.floor(position)
    top = torch.topk(values, count - below).values  # descending: top[-1] is rank ``below``
    upper = top[-2] if count - below > 1 else top[-1]
    return torch.lerp(top[-1], upper, position - below)


def smooth_noise(shape, grid, generator: torch.Generator) -> torch.Tensor:
    """Zero-mean, unit-ish smooth random field of ``shape`` (B, C, *spatial).

    A coarse Gaussian grid of size ``grid`` (one entry per spatial axis) is upsampled
    (tri)linearly; works for 2 or 3 spatial dims (C counts as a spatial axis for 2.5D
    stacks when ``len(grid) == len(shape) - 1``).
    """
    batch, *rest = shape
    if len(grid) == len(rest):  # the channel axis is treated as a spatial axis
        coarse = torch.randn((batch, 1, *grid), generator=generator)
        mode = "trilinear" if len(grid) == 3 else "bilinear"
        return F.interpolate(coarse, size=tuple(rest), mode=mode, align_corners=True)[:, 0]
    channels, *spatial = rest
    coarse = torch.randn((batch, channels, *grid), generator=generator)
    mode = "trilinear" if len(grid) == 3 else "bilinear"
    return F.interpolate(coarse, size=tuple(spatial), mode=mode, align_corners=True)


def bias_field(shape, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Multiplicative smooth field exp(N) with a random strength in [0, strength]."""
    batch = shape[0]
    amplitude = strength * torch.rand((batch,) + (1,) * (len(shape) - 1), generator=generator)
    grid = (2,) + (4,) * (len(shape) - 2)
    return torch.exp(amplitude * smooth_noise(shape, grid, generator))


def gamma(image: torch.Tensor, log_std: float, generator: torch.Generator) -> torch.Tensor:
    """Random gamma exp(N(0, log_std)) after scaling each sample to [0, 1]."""
    batch = image.shape[0]
    view = (batch,) + (1,) * (image.ndim - 1)
    peak = image.reshape(batch, -1).amax(dim=1).clamp_min(1e-6).view(view)
    exponent = torch.exp(log_std * torch.randn(view, generator=generator))
    return (image.clamp_min(0) / peak) ** exponent


def gaussian_kernel(sigma: float, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, int]:
    """Normalised 1D Gaussian of ``sigma`` (voxels), cut at 3 sigma: (kernel, radius)."""
    radius = max(1, int(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=dtype)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum(), radius


def gaussian_blur(image: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """In-plane Gaussian blur of (B, C, H, W) with one sigma (pixels) per sample."""
    out = image.clone()
    for b, sigma in enumerate(sigmas.tolist()):
        if sigma < 0.3:
            continue
        kernel, radius = gaussian_kernel(sigma, image.dtype)
        channels = image.shape[1]
        sample = image[b : b + 1]
        horizontal = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
        vertical = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
        sample = F.conv2d(F.pad(sample, (radius, radius, 0, 0), mode="replicate"), horizontal, groups=channels)
        sample = F.conv2d(F.pad(sample, (0, 0, radius, radius), mode="replicate"), vertical, groups=channels)
        out[b] = sample[0]
    return out


def gaussian_blur3d(image: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of (B, 1, D, H, W), one sigma (voxels) per sample."""
    out = image.clone()
    for b, sigma in enumerate(sigmas.tolist()):
        if sigma < 0.3:
            continue
        kernel, radius = gaussian_kernel(sigma, image.dtype)
        sample = image[b : b + 1]
        for axis in range(3):
            shape = [1, 1, 1, 1, 1]
            shape[2 + axis] = -1
            pad = [0, 0, 0, 0, 0, 0]
            pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
            sample = F.conv3d(F.pad(sample, pad, mode="replicate"), kernel.view(shape))
        out[b] = sample[0]
    return out


def thick_slices(image: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Thick-slice resolution loss along one in-plane axis of (B, C, H, W), for a share ``p``
    of the samples: area-downsampled by a random factor in [1.3, 3], then upsampled back."""
    chosen = torch.rand(image.shape[0], generator=generator) < p
    if not chosen.any():
        return image
    height, width = image.shape[-2:]
    factor = float(1.3 + 1.7 * torch.rand(1, generator=generator))
    along_h = bool(torch.rand(1, generator=generator) < 0.5)
    small = (max(8, int(height / factor)), width) if along_h else (height, max(8, int(width / factor)))
    degraded = F.interpolate(F.interpolate(image, size=small, mode="area"), size=(height, width), mode="bilinear")
    return torch.where(chosen[:, None, None, None], degraded, image)


def rotation_matrices(about_z: torch.Tensor, about_y: torch.Tensor, about_x: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) rotations in (z, y, x) index space from (B,) angles in radians: about the
    z axis (in the axial plane) first, then x, then y."""

    def rotation(angle: torch.Tensor, i: int, j: int) -> torch.Tensor:
        matrix = torch.eye(3).repeat(len(angle), 1, 1)
        cos, sin = torch.cos(angle), torch.sin(angle)
        matrix[:, i, i], matrix[:, j, j] = cos, cos
        matrix[:, i, j], matrix[:, j, i] = -sin, sin
        return matrix

    return rotation(about_y, 0, 2) @ rotation(about_x, 0, 1) @ rotation(about_z, 1, 2)


def rician_noise(image: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Magnitude of the image plus complex Gaussian noise: |I + n_re + i n_im|."""
    real = image + sigma * torch.randn(image.shape, generator=generator)
    imaginary = sigma * torch.randn(image.shape, generator=generator)
    return torch.sqrt(real**2 + imaginary**2)
