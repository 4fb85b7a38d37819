"""From a scan to the model's input grid and back: reorient, resample, normalise.

``prepare`` maps a :class:`Volume` into the model's canonical orientation (exact axis
permutation and flips) and, when its spacing differs from the model's by more than
``SPACING_TOLERANCE``, resamples it (linear) to the model's spacing;
:mod:`~napari_medseg.preprocess.input_grid` maps per-class probabilities back onto the
input's own grid.

A 2D (slice-wise) model may ask for air around each slice (its config's
``slice_margin_mm``): where the scan's foreground comes nearer an in-plane edge than that,
the model grid is padded there (:attr:`Prepared.pad`) with air: 0, or the scan's
minimum when that is negative (CT). The brain networks are trained on slices with air
around the head; on a tightly cropped skull-stripped scan one called 114 mL of grey
matter near the crop edges background without the margin, 10 mL with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..types import Geometry, Volume
from .intensity import FOREGROUND_FRACTION, normalize_intensity
from .orientation import Reorientation, reorient

SPACING_TOLERANCE = 0.1
# The resampled float32 image and SimpleITK's copy of it exist at the same time.
RESAMPLED_BYTES_PER_VOXEL = 8
# Stored dtypes whose every value float32 holds exactly: resampled without a float32 copy.
EXACT_IN_FLOAT32 = tuple(np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.float32))


@dataclass
class Prepared:
    """A volume on the model's grid, with what is needed to go back."""

    image: np.ndarray  # (z, y, x) float32, normalised, canonical orientation, model spacing
    geometry: Geometry  # of ``image``
    reorientation: Reorientation
    canonical_geometry: Geometry  # reoriented input grid, before resampling
    canonical_shape: tuple[int, int, int]
    input_shape: tuple[int, int, int]
    resampled: bool
    #: Zeros added (before, after) along each axis of the model grid, after resampling.
    pad: tuple[tuple[int, int], ...] = ((0, 0), (0, 0), (0, 0))

    @property
    def unpadded(self) -> tuple[slice, slice, slice]:
        """The region of :attr:`image` that comes from the scan."""
        return tuple(slice(b, n - a) for (b, a), n in zip(self.pad, self.image.shape))  # type: ignore[return-value]

    @property
    def padded(self) -> bool:
        """Whether the grid has air added around the scan."""
        return any(b or a for b, a in self.pad)

    def scan_part(self, array: np.ndarray | None) -> np.ndarray | None:
        """The scan's region of a (..., z, y, x) array on the model grid (a view): what is
        scored or mapped back, without the air added around the scan; None stays None (an
        optional map such as a locator's brain mask)."""
        return None if array is None else array[(..., *self.unpadded)]

    def to_model_grid(self, array: np.ndarray, *, linear: bool) -> np.ndarray:
        """A (z, y, x) array on the input grid (labels, a region) -> the model grid, mapped
        as the image was: reoriented, resampled (nearest neighbour unless ``linear``),
        padded with zeros."""
        if array.shape != self.input_shape:
            raise ValueError(f"array of shape {array.shape} does not match the scan {self.input_shape}")
        mapped = np.ascontiguousarray(self.reorientation.apply(array))
        if self.resampled:
            shape = tuple(n - b - a for n, (b, a) in zip(self.image.shape, self.pad))
            mapped = resample_array(mapped, self.canonical_geometry, self.unpadded_geometry(), shape, linear=linear)
        return np.pad(mapped, self.pad) if self.padded else mapped

    def to_input_grid(self, values: np.ndarray) -> np.ndarray:
        """A (z, y, x) map on the model grid -> (z, y, x) float32 on the input grid (linear
        resampling when the image was resampled, else the exact inverse permutation)."""
        out = self.scan_part(np.asarray(values, dtype=np.float32))
        if self.resampled:
            out = resample_array(out, self.unpadded_geometry(), self.canonical_geometry, self.canonical_shape, linear=True)
        return np.ascontiguousarray(self.reorientation.invert(out), dtype=np.float32)

    def unpadded_geometry(self) -> Geometry:
        """The model grid's geometry without the padding."""
        return shift_origin(self.geometry, [b for b, _ in self.pad])

    def drop_image(self) -> None:
        """Free :attr:`image` once nothing reads its voxels any more (mapping back needs
        only its shape): it becomes a read-only zero view of the same shape and dtype that
        takes no memory."""
        self.image = np.broadcast_to(np.zeros((), dtype=self.image.dtype), self.image.shape)


def prepare_for_model(volume: Volume, config, *, normalize: bool = True) -> Prepared:
    """:func:`prepare` with a model config's orientation, spacing and slice margin."""
    return prepare(
        volume, orientation=config.canonical_orientation, spacing=config.target_spacing, normalize=normalize,
        slice_margin_mm=config.slice_margin_mm if config.spatial_dims == 2 else 0.0,
    )  # fmt: skip


def prepare(
    volume: Volume,
    *,
    orientation: str,
    spacing: tuple[float, float, float],
    normalize: bool = True,
    slice_margin_mm: float = 0.0,
) -> Prepared:
    """Map ``volume`` (3D) onto the model's grid; see the module docstring.

    ``slice_margin_mm``: the least air (mm) between the foreground and each in-plane
    (y, x) edge of the model grid; the grid is padded with air where there is less.
    """
    if volume.array.ndim != 3:
        raise ValueError(f"volume of shape {volume.array.shape} must be 3D (z, y, x)")
    canonical, transform = reorient(volume, orientation)
    target = np.asarray(spacing, dtype=float)
    current = np.asarray(canonical.spacing, dtype=float)
    resampled = bool(np.any(np.abs(current - target) / target > SPACING_TOLERANCE))
    geometry = canonical.geometry
    if resampled:
        shape = tuple(max(1, int(round(n * c / t))) for n, c, t in zip(canonical.shape, current, target))
        check_resampling(volume, canonical.shape, tuple(current), tuple(target), shape)
        geometry = Geometry(tuple(target), canonical.geometry.origin, canonical.geometry.direction)
        source = canonical.array
        if source.dtype not in EXACT_IN_FLOAT32:
            source = source.astype(np.float32)
        # ITK interpolates in double, so an int16 scan resampled as it is stored gives the
        # same values as its float32 copy would, without the copy (twice its size).
        image = resample_array(source, canonical.geometry, geometry, shape, linear=True, dtype=np.float32)
    else:
        image = np.ascontiguousarray(canonical.array, dtype=np.float32)
    if normalize:
        # ``image`` is new unless the scan was already float32 in the model's layout.
        image = normalize_intensity(image, in_place=not np.may_share_memory(image, volume.array))
    pad = slice_padding(image, geometry.spacing, slice_margin_mm)
    if any(b or a for b, a in pad):
        # zeros are air in normalised MR; CT's air is its (negative) minimum
        image = np.pad(image, pad, constant_values=min(float(image.min()), 0.0))
        geometry = shift_origin(geometry, [-b for b, _ in pad])
    return Prepared(
        image=image,
        geometry=geometry,
        reorientation=transform,
        canonical_geometry=canonical.geometry,
        canonical_shape=canonical.shape,
        input_shape=volume.shape,
        resampled=resampled,
        pad=pad,
    )


def slice_padding(image: np.ndarray, spacing, margin_mm: float) -> tuple[tuple[int, int], ...]:
    """(before, after) voxels of air per axis so that ``image``'s foreground (voxels above
    ``FOREGROUND_FRACTION`` of the maximum, as in the normalisation) lies at least ``margin_mm`` from each y and x edge."""
    none = ((0, 0), (0, 0), (0, 0))
    if margin_mm <= 0 or not image.size:
        return none
    peak = float(image.max())
    if not np.isfinite(peak) or peak <= 0:
        return none
    foreground = image > FOREGROUND_FRACTION * peak
    pad = [(0, 0)]
    for axis in (1, 2):
        hits = np.flatnonzero(foreground.any(axis=tuple(a for a in range(3) if a != axis)))
        margin = int(np.ceil(margin_mm / float(spacing[axis])))
        if not hits.size:
            pad.append((0, 0))
            continue
        before, after = int(hits[0]), image.shape[axis] - 1 - int(hits[-1])
        pad.append((max(0, margin - before), max(0, margin - after)))
    return tuple(pad)


def shift_origin(geometry: Geometry, voxels) -> Geometry:
    """``geometry`` with its origin moved by ``voxels`` (z, y, x) along its own axes."""
    step = np.asarray(geometry.direction, dtype=float) @ (np.asarray(voxels, dtype=float) * np.asarray(geometry.spacing))
    return Geometry(geometry.spacing, tuple(np.asarray(geometry.origin) + step), geometry.direction)


def check_resampling(
    volume: Volume,
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    target_spacing: tuple[float, ...],
    target_shape: tuple[int, ...],
) -> None:
    """Refuse, before it is allocated, a model grid that does not fit in memory.

    A 64^3 scan of 40 mm voxels becomes 2560^3 voxels at 1 mm: the size of the resampled
    grid is bounded by nothing but the spacings, so it goes through the same gate as the
    arrays a file declares (:func:`~napari_medseg.io.limits.check_allocation`).

    Raises:
        ValueError: naming the scan, both grids and the bytes needed.
    """
    from ..io.limits import AllocationError, check_allocation

    source = volume.meta.get("source") or "the scan"
    try:
        check_allocation("resampled volume", target_shape, RESAMPLED_BYTES_PER_VOXEL, source)
    except AllocationError as exc:
        raise ValueError(
            f"{source}: cannot resample its {_grid(shape, spacing)} to the model's {_fmt(target_spacing)} mm "
            f"grid: {exc.problem.split('; ')[0]}; resample the scan nearer the model's spacing first, or use a "
            "model made for it"
        ) from None


def _grid(shape, spacing) -> str:
    return f"{'x'.join(str(int(n)) for n in shape)} voxels of {_fmt(spacing)} mm"


def _fmt(values) -> str:
    return "x".join(f"{float(v):g}" for v in values)


def resample_array(
    array: np.ndarray,
    source: Geometry,
    target: Geometry,
    shape: tuple[int, int, int],
    *,
    linear: bool,
    dtype: np.dtype | type | None = None,
) -> np.ndarray:
    """Resample a (z, y, x) array from ``source`` to the ``target`` grid of ``shape``;
    the result has ``dtype`` (default: the input's)."""
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(resample_image(array, source, target, shape, linear=linear, dtype=dtype))


def resample_image(
    array: np.ndarray,
    source: Geometry,
    target: Geometry,
    shape: tuple[int, int, int],
    *,
    linear: bool,
    dtype: np.dtype | type | None = None,
):
    """As :func:`resample_array`, but the SimpleITK image (no copy into numpy)."""
    from ..io.sitk_images import image_from_array

    return resample_sitk(image_from_array(np.ascontiguousarray(array), source), target, shape, linear=linear, dtype=dtype)


def resample_sitk(image, target: Geometry, shape: tuple[int, int, int], *, linear: bool, dtype: np.dtype | type | None = None):
    """A SimpleITK image resampled onto the ``target`` grid of (z, y, x) ``shape`` (linear or
    nearest neighbour, 0 outside); the result's pixel type is ``dtype`` (default: the
    image's). The output grid is given by size, origin, spacing and direction (taken from
    a one-voxel image carrying ``target``): no reference image of the output's size."""
    import SimpleITK as sitk

    from ..io.sitk_images import apply_geometry

    grid = apply_geometry(sitk.Image([1, 1, 1], sitk.sitkUInt8), target)
    interpolator = sitk.sitkLinear if linear else sitk.sitkNearestNeighbor
    pixel = image.GetPixelID() if dtype is None else _pixel_id(sitk, dtype)
    return sitk.Resample(image, [int(n) for n in shape[::-1]], sitk.Transform(), interpolator,
                         grid.GetOrigin(), grid.GetSpacing(), grid.GetDirection(), 0.0, pixel)  # fmt: skip


def _pixel_id(sitk, dtype) -> int:
    pixels = {np.dtype(np.float32): sitk.sitkFloat32, np.dtype(np.float64): sitk.sitkFloat64}
    if np.dtype(dtype) not in pixels:
        raise ValueError(f"resampling to dtype {np.dtype(dtype)} is not supported (float32 or float64)")
    return pixels[np.dtype(dtype)]


def _array_view(image) -> np.ndarray:
    """A numpy view of a SimpleITK image's buffer (valid while ``image`` lives)."""
    import SimpleITK as sitk

    return sitk.GetArrayViewFromImage(image)
