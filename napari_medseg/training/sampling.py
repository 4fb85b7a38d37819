"""Training samples for fine-tuning: the model grid, sparse labels, patches, augmentation.

Sparse labels follow the package convention: 0 = not annotated, ``k + 1`` = class ``k``.
:func:`prepare_case` maps an image and its sparse labels onto the model's grid exactly as
inference maps the image (:func:`~napari_medseg.preprocess.prepare`), labels by nearest
neighbour. :class:`PatchSampler` then draws batches through one code path for both model
kinds:

- a *window* of the volume of size (1, py, px) for 2D models (a slice: the input is the
  2.5D stack :func:`~napari_medseg.inference.tiling.context_stack` of that slice, cropped) or
  (pz, py, px) for 3D models (the input is the patch itself);
- most windows contain an annotated voxel: a class present in the strokes is drawn
  uniformly (rare and new classes are not drowned by large ones), then one of its voxels,
  then a window position containing it; a ``context_fraction`` of windows is placed
  uniformly at random instead, so the forgetting guard sees the parent's predictions away
  from the strokes (their unannotated voxels enter only that term).

Windows reaching outside the volume are zero-padded; ``valid`` marks the voxels inside.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..config import ModelConfig
from ..inference.tiling import context_stack
from ..preprocess import prepare_for_model
from ..types import Volume
from .augment import bias_field, gamma, rician_noise

__all__ = [
    "Batch",
    "PatchSampler",
    "TrainingCase",
    "annotated_counts",
    "augment_batch",
    "check_reference",
    "check_sparse_labels",
    "default_patch",
    "flip_dim",
    "prepare_case",
    "prepare_external_case",
]

logger = logging.getLogger(__name__)

#: Window size (array order) when the config names no ``patch_size``.
DEFAULT_PATCH_2D = (160, 160)
DEFAULT_PATCH_3D = (64, 64, 64)
_MAX_INDICES = 200_000  # annotated voxels remembered per class and case (for drawing centres)


@dataclass
class TrainingCase:
    """One image and its sparse labels on the model's grid.

    Attributes:
        image: (Z, Y, X) float32, normalised, canonical orientation, model spacing.
        labels: (Z, Y, X) int16 sparse labels (0 = not annotated, k + 1 = class k).
        counts: (K,) int64 annotated voxels per class on the *input* grid (what was painted).
        voxels: class -> flat indices into ``labels`` of (up to 200,000) voxels of that class.
        reference: (Z, Y, X) int16 dense class indices the unannotated voxels are anchored
            to (the parent's segmentation, see ``distill_target`` of fine-tuning), or None.
        scan: the region of the grid that holds the scan; the rest is the air a 2D model
            sees around each slice (:attr:`~napari_medseg.preprocess.Prepared.pad`).
            None: all of it.
    """

    image: torch.Tensor
    labels: torch.Tensor
    counts: np.ndarray
    voxels: dict[int, np.ndarray]
    reference: torch.Tensor | None = None
    scan: tuple[slice, slice, slice] | None = None

    @property
    def scan_shape(self) -> tuple[int, int, int]:
        """Shape of the scan's region of the grid."""
        if self.scan is None:
            return tuple(self.labels.shape)  # type: ignore[return-value]
        return tuple(s.stop - s.start for s in self.scan)  # type: ignore[return-value]


@dataclass
class Batch:
    """A training batch; ``S`` is (py, px) for 2D models and (pz, py, px) for 3D models.

    Attributes:
        image: (B, C, *S) float32 model input.
        target: (B, *S) int64 class indices (0 where not annotated).
        annotated: (B, *S) bool, voxels with a stroke.
        valid: (B, *S) bool, voxels inside the volume (padding is False).
        reference: (B, *S) int64 the cases' dense reference classes (-1 where the window
            passes the volume's edge), or None when the cases have none.
    """

    image: torch.Tensor
    target: torch.Tensor
    annotated: torch.Tensor
    valid: torch.Tensor
    reference: torch.Tensor | None = None

    def to(self, device: torch.device) -> Batch:
        parts = (self.image, self.target, self.annotated, self.valid, self.reference)
        return Batch(*(None if t is None else t.to(device, non_blocking=True) for t in parts))


def check_sparse_labels(labels: np.ndarray, shape: Sequence[int], num_classes: int, where: str = "labels") -> np.ndarray:
    """Validate a sparse label volume; return it as a (Z, Y, X) uint8 (or int32) array.

    The input is returned as is when it already has that dtype (no copy).

    Raises:
        ValueError: wrong shape, non-integer or negative values, or a value above
            ``num_classes`` (the message suggests naming new classes).
    """
    array = np.asarray(labels)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if tuple(array.shape) != tuple(shape):
        raise ValueError(f"{where} of shape {array.shape} must have the image's shape {tuple(shape)}")
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise ValueError(f"{where} must hold whole numbers (0 = not annotated, k+1 = class k)")
    elif array.dtype.kind not in "iub":
        raise ValueError(f"{where} of dtype {array.dtype} must be integers")
    low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
    if low < 0:
        raise ValueError(f"{where} hold {low}; sparse labels must be >= 0 (0 = not annotated)")
    if high > num_classes:
        raise ValueError(
            f"{where} hold value {high} (class {high - 1}) but the model has {num_classes} classes "
            f"(values 1..{num_classes}); name the extra classes with new_classes / --new-class"
        )
    return array.astype(np.uint8 if high < 256 else np.int32, copy=False)


def check_reference(
    reference: np.ndarray, shape: Sequence[int], num_classes: int, where: str = "reference segmentation"
) -> np.ndarray:
    """Validate a dense segmentation (class indices 0..num_classes-1 on the image's grid).

    Raises:
        ValueError: wrong shape, a non-integer dtype, or a class outside the model's.
    """
    array = np.asarray(reference)
    if array.shape != tuple(shape) or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{where} {array.shape} {array.dtype} must be integer classes on the image's grid {tuple(shape)}")
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise ValueError(f"{where} holds classes {int(array.min())}..{int(array.max())}; the model has {num_classes}")
    return array


def annotated_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(K,) int64 annotated voxels per class of a sparse label volume."""
    return np.bincount(np.asarray(labels).ravel(), minlength=num_classes + 1)[1 : num_classes + 1]


def prepare_case(
    volume: Volume,
    labels: np.ndarray,
    config: ModelConfig,
    *,
    num_classes: int | None = None,
    seed: int = 0,
    reference: np.ndarray | None = None,
) -> TrainingCase:
    """Map ``volume`` and its sparse ``labels`` (same grid) onto ``config``'s model grid.

    Args:
        volume: the image (z, y, x).
        labels: (z, y, x) sparse labels on ``volume``'s grid.
        num_classes: classes the labels may use (default ``config.num_classes``).
        seed: for subsampling the stored voxel indices of very large annotations.
        reference: (z, y, x) dense class indices on ``volume``'s grid (e.g. the parent's
            segmentation), mapped like the labels (nearest neighbour), or None.
    """
    k = config.num_classes if num_classes is None else num_classes
    sparse = check_sparse_labels(labels, volume.shape, k)
    counts = annotated_counts(sparse, k)
    prepared = prepare_for_model(volume, config)
    mapped = prepared.to_model_grid(sparse.astype(np.int16 if k >= 255 else np.uint8), linear=False)
    dense = None
    if reference is not None:
        reference = check_reference(reference, volume.shape, config.num_classes)
        dense = torch.from_numpy(prepared.to_model_grid(reference.astype(np.int16), linear=False).astype(np.int16))
    return _indexed_case(
        np.ascontiguousarray(prepared.image, dtype=np.float32), mapped, counts, dense, prepared.unpadded, k, seed
    )


def prepare_external_case(
    model, volume: Volume, labels: np.ndarray, *, seed: int = 0, reference: np.ndarray | None = None
) -> tuple[TrainingCase, tuple[int, ...]]:
    """:func:`prepare_case` for an external model (an nnU-Net folder, a MONAI bundle): the
    model's own library maps ``volume``, its strokes and ``reference`` onto the network's grid
    (``model.training_arrays``). Returns the case and the network's training window."""
    k = model.config.num_classes
    sparse = check_sparse_labels(labels, volume.shape, k)
    if reference is not None:
        reference = check_reference(reference, volume.shape, k)
    arrays = model.training_arrays(volume, sparse, reference)
    dense = None if arrays.reference is None else torch.from_numpy(arrays.reference.astype(np.int16))
    case = _indexed_case(arrays.image, arrays.labels, annotated_counts(sparse, k), dense, None, k, seed)
    return case, arrays.patch


def _indexed_case(image: np.ndarray, mapped: np.ndarray, counts: np.ndarray, dense, scan, k: int, seed: int) -> TrainingCase:
    """The case, with (up to 200,000) flat indices of each class's strokes for drawing centres."""
    if counts.sum() and not mapped.any():
        logger.warning("all strokes of an image vanished when resampled to the model's spacing")
    rng = np.random.default_rng(seed)
    flat = mapped.reshape(-1)
    voxels = {}
    for c in range(k):
        where = np.flatnonzero(flat == c + 1)
        if where.size > _MAX_INDICES:
            where = np.sort(rng.choice(where, _MAX_INDICES, replace=False))
        if where.size:
            voxels[c] = where
    return TrainingCase(
        image=torch.from_numpy(image), labels=torch.from_numpy(mapped.astype(np.int16)), counts=counts, voxels=voxels,
        reference=dense, scan=scan,
    )  # fmt: skip


def default_patch(config: ModelConfig, shapes: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """The training window (array order): ``config.patch_size`` or a default, no larger than
    the largest image along each axis. 2D: (py, px); 3D: (pz, py, px)."""
    base = tuple(config.patch_size) or (DEFAULT_PATCH_2D if config.spatial_dims == 2 else DEFAULT_PATCH_3D)
    axes = range(3 - config.spatial_dims, 3)
    return tuple(min(p, max(int(s[a]) for s in shapes)) for p, a in zip(base, axes))


def flip_dim(config: ModelConfig) -> int | None:
    """The sample's spatial axis (0-based within ``S``) that runs left-right, or None.

    Left-right flips are the one mirror that keeps anatomy plausible; a 2D model slicing
    sagittally (left-right across slices) gets no flips.
    """
    code = config.canonical_orientation
    letter = next(i for i, c in enumerate(code) if c in "LR")
    axis = 2 - letter  # array axis (z, y, x)
    if config.spatial_dims == 2:
        return None if axis == 0 else axis - 1
    return axis


class PatchSampler:
    """Draws :class:`Batch` es from :class:`TrainingCase` s (see the module docstring).

    Args:
        cases: prepared cases (at least one annotated voxel in all).
        spatial_dims: 2 or 3.
        patch: window size, (py, px) for 2D or (pz, py, px) for 3D.
        offsets: 2D only: slice offsets stacked as channels (model-grid slices).
        context_fraction: share of windows placed at random (stochastic rounding per batch).
        seed: seeds every draw; give each distributed rank its own.
    """

    def __init__(
        self,
        cases: Sequence[TrainingCase],
        *,
        spatial_dims: int,
        patch: Sequence[int],
        offsets: Sequence[int] = (0,),
        context_fraction: float = 0.25,
        seed: int = 0,
    ) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims {spatial_dims!r} must be 2 or 3")
        if len(patch) != spatial_dims or min(patch) < 1:
            raise ValueError(f"patch {tuple(patch)} must be {spatial_dims} positive sizes")
        if not 0 <= context_fraction <= 1:
            raise ValueError(f"context_fraction {context_fraction} must be in [0, 1]")
        self.cases = list(cases)
        self.spatial_dims = spatial_dims
        self.patch = tuple(int(p) for p in patch)
        self.window = self.patch if spatial_dims == 3 else (1, *self.patch)
        self.offsets = tuple(int(o) for o in offsets) if spatial_dims == 2 else (0,)
        self.context_fraction = float(context_fraction)
        self.rng = np.random.default_rng(seed)
        self.classes = sorted({c for case in self.cases for c in case.voxels})
        if not self.classes:
            raise ValueError("no annotated voxels on the model grid: paint at least one stroke")

    def sample(self, batch_size: int) -> Batch:
        """A batch of ``batch_size`` windows (see :class:`Batch` for shapes)."""
        expected = batch_size * self.context_fraction
        n_context = int(expected) + int(self.rng.random() < expected - int(expected))
        samples = [self._window(*self._draw(context=i < n_context)) for i in range(batch_size)]
        image, target, annotated, valid, reference = zip(*samples)
        dense = None if any(r is None for r in reference) else torch.stack(reference)
        image, target, annotated, valid = (torch.stack(parts) for parts in (image, target, annotated, valid))
        return Batch(image=image, target=target, annotated=annotated, valid=valid, reference=dense)

    def _draw(self, *, context: bool) -> tuple[TrainingCase, tuple[int, int, int]]:
        if context:  # anywhere in the scan (not in the air added around it)
            case = self.cases[int(self.rng.integers(len(self.cases)))]
            region = case.scan or tuple(slice(0, n) for n in case.labels.shape)
            center = tuple(int(self.rng.integers(r.start, r.stop)) for r in region)
        else:
            c = self.classes[int(self.rng.integers(len(self.classes)))]
            weights = np.array([case.voxels[c].size if c in case.voxels else 0 for case in self.cases], float)
            case = self.cases[int(self.rng.choice(len(self.cases), p=weights / weights.sum()))]
            flat = int(case.voxels[c][int(self.rng.integers(case.voxels[c].size))])
            center = tuple(int(i) for i in np.unravel_index(flat, tuple(case.labels.shape)))
        start = tuple(
            int(np.clip(x - self.rng.integers(p), 0, max(0, n - p)))
            for x, p, n in zip(center, self.window, case.labels.shape)
        )
        return case, start

    def _window(self, case: TrainingCase, start: tuple[int, int, int]):
        reference = case.reference
        if self.spatial_dims == 2:
            z = start[0]
            source = context_stack(case.image, torch.tensor([z]), self.offsets)[0][:, None]  # (C, 1, Y, X)
            labels = case.labels[z : z + 1]
            reference = None if reference is None else reference[z : z + 1]
            start = (0, *start[1:])
        else:
            source = case.image[None]
            labels = case.labels
        image = _crop(source, start, self.window)
        sparse = _crop(labels, start, self.window)
        valid = _crop(torch.ones(labels.shape, dtype=torch.bool), start, self.window)
        dense = None if reference is None else _crop(reference, start, self.window).long().masked_fill_(~valid, -1)
        if self.spatial_dims == 2:
            image, sparse, valid = image[:, 0], sparse[0], valid[0]
            dense = None if dense is None else dense[0]
        sparse = sparse.long()
        return image, (sparse - 1).clamp_min(0), sparse > 0, valid, dense


def _crop(array: torch.Tensor, start: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """The window of the last ``len(size)`` axes at ``start``, zero-padded past the end."""
    lead = array.shape[: array.ndim - len(size)]
    out = torch.zeros((*lead, *size), dtype=array.dtype)
    src, dst = [], []
    for s, p, n in zip(start, size, array.shape[len(lead) :]):
        stop = min(s + p, n)
        src.append(slice(s, stop))
        dst.append(slice(0, stop - s))
    out[(..., *dst)] = array[(..., *src)]
    return out


def augment_batch(
    batch: Batch,
    generator: torch.Generator,
    *,
    flip: int | None = None,
    bias_strength: float = 0.2,
    gamma_log_std: float = 0.1,
    max_noise: float = 0.02,
) -> Batch:
    """Light augmentation from the default model's family: bias field, gamma, noise, flip.

    Gamma and Rician noise apply to non-negative images (normalised MR); images with
    negative values (CT) get the bias field and Gaussian noise. ``flip`` is the spatial
    axis (within ``S``) mirrored in about half of the samples (see :func:`flip_dim`).
    ``batch`` is not modified.
    """
    image = batch.image.float()
    b = image.shape[0]
    field = bias_field((b, *image.shape[-3:]), bias_strength, generator)
    image = image * field.reshape(b, *([1] * (image.ndim - field.ndim)), *field.shape[1:])
    view = (b,) + (1,) * (image.ndim - 1)
    sigma = max_noise * torch.rand(view, generator=generator)
    if bool((image >= 0).all()):
        peak = image.reshape(b, -1).amax(dim=1).clamp_min(1e-6).view(view)
        image = gamma(image, gamma_log_std, generator) * peak
        image = rician_noise(image, sigma, generator)
    else:
        image = image + sigma * torch.randn(image.shape, generator=generator)
    target, annotated, valid, reference = batch.target, batch.annotated, batch.valid, batch.reference
    if flip is not None:
        chosen = torch.rand(b, generator=generator) < 0.5
        if chosen.any():
            image, target, annotated, valid = (t.clone() for t in (image, target, annotated, valid))
            reference = None if reference is None else reference.clone()
            image[chosen] = image[chosen].flip(2 + flip)
            for t in (target, annotated, valid, reference):
                if t is not None:
                    t[chosen] = t[chosen].flip(1 + flip)
    return Batch(image=image.contiguous(), target=target, annotated=annotated, valid=valid, reference=reference)
