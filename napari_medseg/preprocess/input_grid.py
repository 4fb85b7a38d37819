"""The model's per-class probabilities back on the input's own grid, and read there.

``restore`` inverts :func:`~napari_medseg.preprocess.pipeline.prepare`: linear resampling
when a resampling happened, otherwise the exact inverse permutation, so labels agree voxel
for voxel with the model's output. Probabilities on the input grid are stored class-major
behind a (z, y, x, K) view (:func:`classes_last`), and labels are their arg-max by slabs.
"""

from __future__ import annotations

import numpy as np

from ..io.limits import release_pages
from .pipeline import Prepared, _array_view, resample_sitk

__all__ = ["argmax_labels", "classes_last", "restore", "restore_into", "zero_probabilities"]


def classes_last(array: np.ndarray) -> np.ndarray:
    """The (z, y, x, K) view of class-major (K, z, y, x) storage, without a copy.

    Probabilities on the input grid are kept this way: each class's volume is contiguous,
    so mapping one class back, writing NIfTI (which stores channel after channel) and
    showing one class as a layer each touch one block of memory, not every K-th value.
    A disk-backed ``numpy.memmap`` stays one (its view keeps the mapping).
    """
    return np.moveaxis(array, 0, -1)


def zero_probabilities(shape: tuple[int, ...]) -> np.ndarray:
    """A zero-filled float32 (z, y, x, K) array of ``shape``, stored class-major
    (:func:`classes_last`); its pages are zeroed when first touched."""
    return classes_last(np.zeros((shape[-1], *shape[:-1]), dtype=np.float32))


def argmax_labels(probabilities: np.ndarray, slab: int = 16) -> np.ndarray:
    """(z, y, x) class indices of (z, y, x, K) probabilities: ``numpy.argmax`` over K (the
    first class on ties), ``slab`` slices at a time; uint8 (uint16 beyond 256 classes).

    A running maximum over the classes, one class's slab at a time: it reads class-major
    storage (:func:`classes_last`) in contiguous blocks, where ``numpy.argmax`` strides
    across every class for each voxel, and never holds an int64 volume; a memmap's pages
    are released as it goes.
    """
    labels = np.empty(probabilities.shape[:-1], dtype=np.uint8 if probabilities.shape[-1] <= 256 else np.uint16)
    for start in range(0, labels.shape[0], slab):
        block = probabilities[start : start + slab]
        best = np.array(block[..., 0], dtype=np.float32)
        winner = labels[start : start + slab]
        winner[...] = 0
        for k in range(1, block.shape[-1]):
            value = block[..., k]
            better = value > best
            np.copyto(best, value, where=better)
            winner[better] = k
        release_pages(probabilities)
    return labels


def restore(probabilities: np.ndarray, prepared: Prepared) -> np.ndarray:
    """(K, z, y, x) probabilities on the model grid -> (z, y, x, K) float32 on the input
    grid, stored class-major (:func:`classes_last`)."""
    out = zero_probabilities((*prepared.input_shape, probabilities.shape[0]))
    return restore_into(probabilities, prepared, out)


def restore_into(probabilities: np.ndarray, prepared: Prepared, out: np.ndarray, *, slab: int = 16) -> np.ndarray:
    """Map (K, z, y, x) model-grid probabilities into ``out``, (z, y, x, K) float32 on the
    input grid and zero-filled (:func:`zero_probabilities`, or a ``numpy.memmap`` on a new
    file).

    One class at a time: its model-grid volume is copied into memory (a disk-backed model
    grid is read once, in order, however the scan is oriented), mapped back and written
    into ``out`` ``slab`` input slices at a time, only within the box that holds its
    non-zero voxels (a whole head's 32 structures lie in the brain's box). ``out`` and
    ``probabilities`` may be disk-backed memmaps, whose pages are released as they are
    done; ``out`` is best class-major so that each class's pages are written once rather
    than once per class. Beyond ``out`` this holds one class on each grid, never a second
    K-class volume. After a resampling the classes are clipped at 0 and renormalised to sum
    to 1. Returns ``out``.
    """
    k = probabilities.shape[0]
    expected = (*prepared.input_shape, k)
    if out.shape != expected or out.dtype != np.float32:
        raise ValueError(f"output array {out.shape} {out.dtype} must be {expected} float32")
    for c in range(k):
        values, owner = _class_on_input_grid(probabilities, prepared, c)
        box = _nonzero_box(values)  # ``out`` is zero outside it already
        if box is None:
            continue
        rows, cols = box[1:]
        for start in range(box[0].start, box[0].stop, slab):
            stop = min(start + slab, box[0].stop)
            part, target = values[start:stop, rows, cols], out[start:stop, rows, cols, c]
            if prepared.resampled:
                np.maximum(part, 0, out=target)
            else:
                target[...] = part
            release_pages(out)
        del values, owner
    if prepared.resampled:
        _renormalise(out, slab)
    return out


def _class_on_input_grid(probabilities: np.ndarray, prepared: Prepared, c: int):
    """Class ``c`` of (K, z, y, x) model-grid ``probabilities`` on the input grid: (z, y, x)
    float32 in the input's layout, a view valid while the returned owner (the resampled
    SimpleITK image, or None) lives."""
    from ..io.sitk_images import image_from_array

    part = np.array(prepared.scan_part(probabilities[c]), dtype=np.float32, order="C")
    release_pages(probabilities)  # copied: a disk-backed model grid's pages go now
    if not prepared.resampled:
        return prepared.reorientation.invert(part), None
    source = image_from_array(part, prepared.unpadded_geometry())
    del part
    image = resample_sitk(source, prepared.canonical_geometry, prepared.canonical_shape, linear=True)
    return prepared.reorientation.invert(_array_view(image)), image


def _nonzero_box(values: np.ndarray) -> tuple[slice, slice, slice] | None:
    """The smallest box of (z, y, x) ``values`` holding every non-zero voxel; None if all
    are zero. Read in memory order, so a transposed view costs no more than a contiguous one."""
    nonzero = values != 0
    box = []
    for axis in range(3):
        hits = np.flatnonzero(nonzero.any(axis=tuple(a for a in range(3) if a != axis)))
        if not hits.size:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)  # type: ignore[return-value]


def _renormalise(out: np.ndarray, slab: int) -> None:
    """Divide (z, y, x, K) ``out`` by its sum over the classes (at least 1e-6), ``slab``
    slices at a time, class by class: the sum adds the classes in order, as numpy sums
    over a class-major axis, and zero stretches of a class are not rewritten."""
    for start in range(0, out.shape[0], slab):
        block = out[start : start + slab]
        total = np.array(block[..., 0], dtype=np.float32)
        for c in range(1, block.shape[-1]):
            total += block[..., c]
        np.maximum(total, 1e-6, out=total)
        for c in range(block.shape[-1]):
            target = block[..., c]
            if target.any():
                target /= total
        release_pages(out)
