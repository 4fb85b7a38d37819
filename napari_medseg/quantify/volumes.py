"""Label-map checks and per-class volumes in millilitres.

Class names follow the model configs' convention: ``class_names[k]`` names label value
``k`` and ``class_names[0]`` is background, which is never reported.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..types import Geometry

__all__ = ["as_labels", "asymmetry_indices", "check_class_names", "class_volumes_ml", "label_counts"]


def as_labels(array: np.ndarray, *, name: str = "labels", ndim: int | None = 3) -> np.ndarray:
    """Check that ``array`` is a label map and return it as a non-negative integer array.

    Args:
        array: label values, (z, y, x) when ``ndim`` is 3. Integer and bool arrays are
            returned as they are (no copy); float arrays holding whole numbers (some tools
            store labels as float32) are converted to int64.
        name: what to call the array in error messages ("pred", "ref", ...).
        ndim: the required number of axes, or None for any.

    Returns:
        The labels, an integer or bool array of the same shape; the input is never modified.

    Raises:
        ValueError: wrong number of axes, a non-numeric dtype, fractional, negative or
            non-finite values (the message quotes the first bad value).
    """
    array = np.asarray(array)
    if ndim is not None and array.ndim != ndim:
        axes = "(z, y, x)" if ndim == 3 else f"{ndim} axes"
        raise ValueError(f"{name} of shape {array.shape} must be {axes}")
    if array.dtype == bool or np.issubdtype(array.dtype, np.unsignedinteger):
        return array
    if np.issubdtype(array.dtype, np.signedinteger):
        if array.size and array.min() < 0:
            raise ValueError(f"{name} has the negative label value {int(array.min())}; labels must be >= 0")
        return array
    if np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array) | (array != np.round(array)) | (array < 0)
        if bad.any():
            value = array[bad].flat[0]
            raise ValueError(
                f"{name} holds the value {value!r}, not a label; labels must be whole numbers >= 0"
            )
        return array.astype(np.int64)
    raise ValueError(f"{name} has dtype {array.dtype}; labels must be integers")


def check_class_names(class_names: Sequence[str], max_label: int, *, name: str = "labels") -> tuple[str, ...]:
    """Check that ``class_names`` (background first) names every label up to ``max_label``.

    Returns:
        The names as a tuple of str.

    Raises:
        ValueError: fewer than two names, duplicate names, or a label value without a name.
    """
    if isinstance(class_names, str):
        raise ValueError(f"class_names {class_names!r} must be a sequence of names, not one string")
    names = tuple(str(n) for n in class_names)
    if len(names) < 2:
        raise ValueError(f"class_names {names!r} must name background (index 0) and at least one class")
    if len(set(names)) != len(names):
        raise ValueError(f"class_names {names!r} must be unique")
    if max_label >= len(names):
        raise ValueError(
            f"{name} holds the label value {max_label} but class_names {names!r} names only "
            f"values 0..{len(names) - 1} (index 0 is background)"
        )
    return names


def label_counts(labels: np.ndarray, minlength: int = 0, slab: int = 1 << 22) -> np.ndarray:
    """Voxel count of every label value: (max(max_label + 1, minlength),) int64.

    ``slab`` voxels at a time: ``np.bincount`` converts its input to int64, eight bytes a
    voxel, which for a whole uint8 volume was eight times the labels' own memory."""
    flat = labels.reshape(-1)
    if flat.dtype == bool:
        flat = flat.view(np.uint8)
    counts = np.zeros(minlength, dtype=np.int64)
    for start in range(0, flat.size, slab):
        part = np.bincount(flat[start : start + slab], minlength=minlength)
        if part.size > counts.size:
            counts = np.pad(counts, (0, part.size - counts.size))
        counts[: part.size] += part
    return counts


def class_volumes_ml(labels: np.ndarray, geometry: Geometry, class_names: Sequence[str]) -> dict[str, float]:
    """Volume of each foreground class in millilitres (voxel count x voxel volume).

    Args:
        labels: (z, y, x) integer label map; value k is ``class_names[k]``.
        geometry: the grid's geometry; only ``spacing`` (mm) matters.
        class_names: names of label values 0..K, background first.

    Returns:
        ``{name: mL}`` for classes 1..K in label order (0.0 for a class that is absent);
        background is left out.

    Example:
        >>> geometry = Geometry(spacing=(2.0, 1.0, 0.5), origin=(0, 0, 0))
        >>> class_volumes_ml(np.ones((10, 10, 10), np.uint8), geometry, ["background", "brain"])
        {'brain': 1.0}
    """
    labels = as_labels(labels)
    counts = label_counts(labels)
    names = check_class_names(class_names, len(counts) - 1)
    counts = np.pad(counts, (0, len(names) - len(counts)))
    voxel_ml = geometry.voxel_volume_ml()
    return {names[k]: float(counts[k]) * voxel_ml for k in range(1, len(names))}


def asymmetry_indices(volumes_ml: dict[str, float]) -> dict[str, float]:
    """Left/right asymmetry of paired structures, in percent.

    For every pair of names ``"left X"`` / ``"right X"`` in ``volumes_ml``, the index of
    ``"X"`` is 100 (L - R) / ((L + R) / 2): positive when the left one is larger; NaN when
    both are empty.

    Example:
        >>> asymmetry_indices({"left hippocampus": 4.0, "right hippocampus": 3.6, "CSF": 200.0})
        {'hippocampus': 10.526315789473683}
    """
    out: dict[str, float] = {}
    for name, left in volumes_ml.items():
        if not name.startswith("left "):
            continue
        structure = name[len("left "):]
        right = volumes_ml.get("right " + structure)
        if right is None:
            continue
        mean = (left + right) / 2
        out[structure] = 100.0 * (left - right) / mean if mean > 0 else float("nan")
    return out
