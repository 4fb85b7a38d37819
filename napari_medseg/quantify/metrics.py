"""Agreement between a predicted and a reference label map: Dice, HD95, volume difference.

Conventions for absent classes (class k has no voxel in one or both maps):

============================  ==========  ==========
k present in                  ``dice``    ``hd95``
============================  ==========  ==========
both maps                     [0, 1]      >= 0 mm
only one of them              0.0         ``inf`` (no surface to measure to)
neither (absent, agreement)   ``nan``     ``nan`` (undefined, left out of means)
============================  ==========  ==========

In JSON (``medseg evaluate``) ``nan`` and ``inf`` are written as ``null``; the per-class
``present_pred`` / ``present_ref`` flags tell which case it was.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from ..types import Geometry
from .volumes import as_labels, check_class_names

__all__ = ["dice", "evaluate", "hd95", "surface_distances", "volume_difference_ml"]


def _pair(pred: np.ndarray, ref: np.ndarray, ndim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    pred = as_labels(pred, name="pred", ndim=ndim)
    ref = as_labels(ref, name="ref", ndim=ndim)
    if pred.shape != ref.shape:
        raise ValueError(f"pred of shape {pred.shape} and ref of shape {ref.shape} must have the same shape")
    return pred, ref


def _check_spacing(spacing: Sequence[float], ndim: int) -> np.ndarray:
    values = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if values.size != ndim or not np.all(np.isfinite(values)) or values.min() <= 0:
        raise ValueError(f"spacing {tuple(spacing)} must hold {ndim} positive values (mm), one per axis")
    return values


def dice(pred: np.ndarray, ref: np.ndarray, k: int) -> float:
    """Dice coefficient 2|P ∩ R| / (|P| + |R|) of class ``k``.

    Args:
        pred: predicted labels, any shape (usually (z, y, x)), integer.
        ref: reference labels of the same shape.
        k: the label value to compare.

    Returns:
        A value in [0, 1]; ``nan`` when ``k`` is absent from both maps (undefined).
    """
    pred, ref = _pair(pred, ref)
    p, r = pred == k, ref == k
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(r))
    if total == 0:
        return float("nan")
    return 2.0 * int(np.count_nonzero(p & r)) / total


def volume_difference_ml(pred: np.ndarray, ref: np.ndarray, k: int, spacing: Sequence[float]) -> float:
    """Signed volume difference of class ``k``, predicted minus reference, in mL.

    Args:
        pred: predicted labels, (z, y, x) integer.
        ref: reference labels of the same shape.
        k: the label value to compare.
        spacing: voxel size in mm along (z, y, x).

    Returns:
        (voxels in pred - voxels in ref) x voxel volume, mL (1 mL = 1000 mm^3).
    """
    pred, ref = _pair(pred, ref, ndim=3)
    voxel_ml = float(np.prod(_check_spacing(spacing, 3))) / 1000.0
    return (int(np.count_nonzero(pred == k)) - int(np.count_nonzero(ref == k))) * voxel_ml


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with at least one face neighbour outside it (the array edge counts)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distances (mm) from each surface voxel of one mask to the nearest surface voxel of the other.

    Surface voxels are mask voxels with a face neighbour outside the mask (or at the
    array's edge). Distances come from ``ndimage.distance_transform_edt`` with
    ``sampling=spacing``, computed only inside the two masks' joint bounding box, which
    gives the same result as on the whole array.

    Args:
        pred_mask: boolean mask, any number of axes (usually (z, y, x)).
        ref_mask: boolean mask of the same shape; both must be non-empty.
        spacing: voxel size in mm per axis, in the arrays' axis order.

    Returns:
        1D float64 array: pred-to-ref distances followed by ref-to-pred distances.
    """
    pred_mask, ref_mask = np.asarray(pred_mask, dtype=bool), np.asarray(ref_mask, dtype=bool)
    if pred_mask.shape != ref_mask.shape:
        raise ValueError(f"masks of shape {pred_mask.shape} and {ref_mask.shape} must have the same shape")
    sampling = _check_spacing(spacing, pred_mask.ndim)
    union = pred_mask | ref_mask
    box = ndimage.find_objects(union.view(np.uint8))[0] if union.any() else None
    if box is None or not pred_mask.any() or not ref_mask.any():
        raise ValueError("surface distances need two non-empty masks")
    # Exact: a mask voxel on the box's face has its outward neighbour outside both masks
    # (or is on the array's edge), so it is on the surface whether or not we crop.
    pred_surface, ref_surface = _surface(pred_mask[box]), _surface(ref_mask[box])
    to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=sampling)
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=sampling)
    return np.concatenate([to_ref[pred_surface], to_pred[ref_surface]])


def hd95(pred: np.ndarray, ref: np.ndarray, k: int, spacing: Sequence[float]) -> float:
    """95th percentile of the symmetric surface distances of class ``k``, in mm.

    The distances from pred's surface to ref's and from ref's surface to pred's are pooled
    and their 95th percentile taken (``np.percentile``, linear interpolation), as MedPy's
    ``hd95`` does. See :func:`surface_distances` for the surface and the distances.

    Args:
        pred: predicted labels, any number of axes (usually (z, y, x)), integer.
        ref: reference labels of the same shape.
        k: the label value to compare.
        spacing: voxel size in mm per axis, in the arrays' axis order (z, y, x).

    Returns:
        Distance in mm; ``inf`` when ``k`` is in only one of the maps, ``nan`` when in
        neither (undefined).
    """
    pred, ref = _pair(pred, ref)
    _check_spacing(spacing, pred.ndim)
    return _hd95_masks(pred == k, ref == k, spacing)


def _hd95_masks(pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: Sequence[float]) -> float:
    has_pred, has_ref = bool(pred_mask.any()), bool(ref_mask.any())
    if not has_pred and not has_ref:
        return float("nan")
    if not (has_pred and has_ref):
        return float("inf")
    return float(np.percentile(surface_distances(pred_mask, ref_mask, spacing), 95))


def evaluate(
    pred: np.ndarray,
    ref: np.ndarray,
    geometry: Geometry,
    class_names: Sequence[str],
) -> dict[str, Any]:
    """Dice, HD95 and volumes of every foreground class, and the mean Dice.

    Args:
        pred: predicted labels, (z, y, x) integer; value k is ``class_names[k]``.
        ref: reference labels on the same grid (same shape; ``geometry`` describes both).
        geometry: the grid; its spacing (mm) scales HD95 and the volumes.
        class_names: names of label values 0..K, background first (never reported).

    Returns:
        ``{"classes": {name: row}, "mean_dice": float, "mean_dice_classes": [names]}``
        where each row holds ``index``, ``dice``, ``hd95_mm``, ``volume_pred_ml``,
        ``volume_ref_ml``, ``volume_diff_ml`` (pred - ref), ``present_pred`` and
        ``present_ref``. ``mean_dice`` averages the foreground classes whose Dice is
        defined (present in pred or ref; listed in ``mean_dice_classes``), ``nan`` if none.
        See the module docstring for ``nan`` and ``inf``.
    """
    pred, ref = _pair(pred, ref, ndim=3)
    if pred.dtype == bool:
        pred = pred.view(np.uint8)
    if ref.dtype == bool:
        ref = ref.view(np.uint8)
    max_pred = int(pred.max()) if pred.size else 0
    max_ref = int(ref.max()) if ref.size else 0
    names = check_class_names(class_names, max_pred, name="pred")
    check_class_names(names, max_ref, name="ref")
    n = len(names)

    # One joint histogram gives every class's |P|, |R| and |P ∩ R|.
    joint = np.bincount(
        (pred.astype(np.int64) * n + ref).reshape(-1), minlength=n * n
    ).reshape(n, n)
    pred_counts, ref_counts, overlap = joint.sum(axis=1), joint.sum(axis=0), np.diagonal(joint)
    voxel_ml = geometry.voxel_volume_ml()
    pred_boxes = ndimage.find_objects(pred) if max_pred else []
    ref_boxes = ndimage.find_objects(ref) if max_ref else []

    classes: dict[str, dict[str, Any]] = {}
    for k in range(1, n):
        p, r = int(pred_counts[k]), int(ref_counts[k])
        dice_k = 2.0 * int(overlap[k]) / (p + r) if p + r else float("nan")
        if p and r:
            box = _union_box(pred_boxes[k - 1], ref_boxes[k - 1])
            hd = _hd95_masks(pred[box] == k, ref[box] == k, geometry.spacing)
        else:
            hd = float("nan") if not (p or r) else float("inf")
        classes[names[k]] = {
            "index": k,
            "dice": dice_k,
            "hd95_mm": hd,
            "volume_pred_ml": p * voxel_ml,
            "volume_ref_ml": r * voxel_ml,
            "volume_diff_ml": (p - r) * voxel_ml,
            "present_pred": p > 0,
            "present_ref": r > 0,
        }
    defined = [name for name, row in classes.items() if not math.isnan(row["dice"])]
    mean = float(np.mean([classes[name]["dice"] for name in defined])) if defined else float("nan")
    return {"classes": classes, "mean_dice": mean, "mean_dice_classes": defined}


def _union_box(a: tuple[slice, ...], b: tuple[slice, ...]) -> tuple[slice, ...]:
    """Smallest box holding boxes ``a`` and ``b`` (cropping to it keeps HD95 exact)."""
    return tuple(slice(min(s.start, t.start), max(s.stop, t.stop)) for s, t in zip(a, b))
