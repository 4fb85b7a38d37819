"""The simulated annotator of ``bench/correction_loop.py``: where a person would paint.

Pure numpy/SciPy on (z, y, x) label arrays; strokes are drawn on axial slices (axis 0),
the way a napari user paints on the displayed slice. Sparse labels follow the package's
convention: 0 = not annotated, k + 1 = class k.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

CLASSES = ("CSF", "grey matter", "white matter")  # reference values 1, 2, 3

_GOLDEN = (5**0.5 - 1) / 2  # spreads any prefix of a sequence of quantiles
_NEIGHBOURS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))


def ridge_path(region: np.ndarray, length: int) -> list[tuple[int, int]]:
    """Pixels of a stroke along the middle of a 2D region, as a hand would draw it.

    Starts at the region's deepest pixel (largest distance to its edge; among equally deep
    ones, the one nearest their centroid) and walks both ways along the ridge of the
    distance map, one 8-neighbour at a time, never turning by more than 45 degrees, until
    ``length`` pixels in all or the region ends (a leg that ends early leaves its share to
    the other).

    Args:
        region: (y, x) bool, non-empty.
        length: pixels wanted (>= 1).

    Returns:
        The path's (y, x) pixels in drawing order, all inside ``region``.
    """
    depth = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    deepest = np.argwhere(depth == depth.max())
    centre = deepest.mean(axis=0)
    start = tuple(int(i) for i in deepest[np.argmin(((deepest - centre) ** 2).sum(axis=1))])
    visited = {start}

    def walk(current, heading, wanted):
        pixels = []
        for _ in range(wanted):
            best = None
            for d in _NEIGHBOURS:
                if heading is not None and d[0] * heading[0] + d[1] * heading[1] <= 0:
                    continue
                y, x = current[0] + d[0], current[1] + d[1]
                if not (0 <= y < region.shape[0] and 0 <= x < region.shape[1]) or not region[y, x] or (y, x) in visited:
                    continue
                align = 0.0 if heading is None else (d[0] * heading[0] + d[1] * heading[1]) / math.hypot(*d) / math.hypot(*heading)
                score = (depth[y, x], align)
                if best is None or score > best[0]:
                    best = (score, (y, x), d)
            if best is None:
                break
            _, current, heading = best
            visited.add(current)
            pixels.append(current)
        return pixels, heading

    forward, heading = walk(start, None, length // 2)
    if not forward:
        return [start]
    first = (forward[0][0] - start[0], forward[0][1] - start[1])
    backward, _ = walk(start, (-first[0], -first[1]), length - 1 - len(forward))
    more, _ = walk(forward[-1], heading, length - 1 - len(forward) - len(backward))
    return backward[::-1] + [start] + forward + more


def stroke(region: np.ndarray, allowed: np.ndarray, *, length: int, radius: int) -> np.ndarray:
    """A brush stroke: :func:`ridge_path` of ``region`` painted with a disk of ``radius``
    pixels, kept inside ``allowed`` (the careful annotator stays inside the true structure).

    Returns:
        (y, x) bool mask.
    """
    line = np.zeros(region.shape, bool)
    for y, x in ridge_path(region, length):
        line[y, x] = True
    if radius > 0:
        disk = np.hypot(*np.mgrid[-radius : radius + 1, -radius : radius + 1]) <= radius
        line = ndimage.binary_dilation(line, structure=disk)
    return line & allowed


def error_regions(prediction: np.ndarray, reference: np.ndarray, brain: np.ndarray, annotated: np.ndarray):
    """Connected error regions, largest first: per reference class k, the 26-connected
    components of brain voxels of class k predicted otherwise and not yet annotated.

    Returns:
        A list of (voxels, k, mask) with ``mask`` a (z, y, x) bool array of the region.
    """
    regions = []
    for k in range(1, int(reference.max()) + 1):
        wrong = brain & (reference == k) & (prediction != k) & ~annotated
        labelled, count = ndimage.label(wrong, structure=np.ones((3, 3, 3), bool))
        if not count:
            continue
        sizes = np.bincount(labelled.ravel())
        sizes[0] = 0
        for index in np.argsort(sizes)[::-1][: min(count, 16)]:
            if sizes[index]:
                regions.append((int(sizes[index]), k, labelled == index))
    regions.sort(key=lambda entry: -entry[0])
    return regions


def draw_strokes(
    prediction: np.ndarray,
    reference: np.ndarray,
    sparse: np.ndarray,
    *,
    budget: int,
    regions: int = 6,
    length: int = 30,
    radius: int = 1,
    min_pixels: int = 10,
) -> tuple[np.ndarray, list[dict]]:
    """One round of the simulated annotator on axial (axis 0) slices.

    The ``regions`` largest error regions (:func:`error_regions`) share the strokes in
    proportion to their size (at least one each). A region's strokes go to slices chosen
    by quantiles of its voxels' slice index (so where it is large), taken in a golden-ratio
    order so that any first few are spread out; each stroke lies inside the largest 2D
    piece of the region on its slice (:func:`stroke`), painted with the reference class and
    kept inside that class. The regions take turns (the first stroke of every region, then
    the second...), so a small budget is not spent on the largest region alone. Strokes
    are drawn until ``budget`` newly annotated voxels would be exceeded; a stroke that
    would exceed it is left out.

    Args:
        prediction, reference: (z, y, x) labels (0 background, k = class k).
        sparse: (z, y, x) corrections so far (0 = not annotated, k + 1 = class k); not modified.
        budget: new voxels this round may annotate at most.
        regions: how many error regions to visit.
        length, radius: stroke length and brush radius, in pixels.
        min_pixels: smaller 2D pieces get no stroke.

    Returns:
        The new sparse labels (a copy) and one record per stroke (slice, class, voxels).
    """
    out = sparse.copy()
    brain = reference > 0
    found = error_regions(prediction, reference, brain, sparse > 0)[:regions]
    if not found or budget <= 0:
        return out, []
    per_stroke = max(1, int(0.7 * length * (2 * radius + 1)))  # clipped strokes are smaller
    wanted = max(len(found), budget // per_stroke)
    total = sum(size for size, _, _ in found)
    shares = [max(1, int(round(wanted * size / total))) for size, _, _ in found]
    plans = []
    for (size, k, mask), share in zip(found, shares):
        z_of = np.nonzero(mask.any(axis=(1, 2)))[0]
        cumulative = np.cumsum(mask[z_of].sum(axis=(1, 2))) / mask.sum()
        quantiles = [(0.5 + i * _GOLDEN) % 1.0 for i in range(share)]
        slices = list(dict.fromkeys(int(z_of[min(np.searchsorted(cumulative, q), len(z_of) - 1)]) for q in quantiles))
        plans.append((size, k, mask, slices))
    records: list[dict] = []
    used = 0
    for turn in range(max(len(slices) for *_, slices in plans)):
        for size, k, mask, slices in plans:
            if turn >= len(slices):
                continue
            z = slices[turn]
            pieces, count = ndimage.label(mask[z], structure=np.ones((3, 3), bool))
            sizes = np.bincount(pieces.ravel())
            sizes[0] = 0
            if not count or sizes.max() < min_pixels:
                continue
            piece = pieces == int(np.argmax(sizes))
            painted = stroke(piece, reference[z] == k, length=length, radius=radius)
            new = painted & (out[z] == 0)
            if used + int(new.sum()) > budget:
                continue
            out[z][painted] = k + 1
            used += int(new.sum())
            records.append({"slice": z, "class": CLASSES[k - 1] if k <= len(CLASSES) else k, "voxels": int(new.sum()), "region_voxels": size})
    return out, records


def lateral_ventricles(reference: np.ndarray) -> tuple[np.ndarray, dict]:
    """The lateral ventricles derived from the reference tissue labels.

    The outer CSF (sulci, cisterns, the third ventricle's surroundings) is one large
    26-connected CSF component; the lateral ventricles are closed CSF cavities deep in the
    brain. Definition: the 26-connected CSF components (reference value 1, whole volume)
    that reach into the central box — the middle third of the brain's bounding box along
    every axis — other than the largest CSF component, with at least 1000 voxels each. On
    the dev subject these are the left and right lateral ventricles (9,201 and 7,311 voxels).

    Returns:
        (z, y, x) bool mask and a description (box in array indices, component sizes).
    """
    brain = np.argwhere(reference > 0)
    low, high = brain.min(axis=0), brain.max(axis=0) + 1
    box = tuple(slice(int(a + (b - a) / 3), int(a + 2 * (b - a) / 3)) for a, b in zip(low, high))
    csf = reference == 1
    labelled, count = ndimage.label(csf, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    outer = int(np.argmax(sizes))
    chosen = [int(c) for c in np.unique(labelled[box]) if c and c != outer and sizes[c] >= 1000]
    mask = np.isin(labelled, chosen)
    description = {
        "box_zyx": [[s.start, s.stop] for s in box],
        "component_voxels": sorted((int(sizes[c]) for c in chosen), reverse=True),
        "voxels": int(mask.sum()),
    }
    return mask, description


def new_class_strokes(reference: np.ndarray, structure: np.ndarray, slices, *, ring: int = 8, length: int = 40) -> np.ndarray:
    """Strokes teaching a new class on a few axial slices, as an annotator would paint them.

    On each slice: one stroke in each of the two largest pieces of ``structure`` (the new
    class, sparse value K + 1 = 5), one in each of the two largest pieces of grey and of
    white matter within ``ring`` pixels around it (what the new class is not), and one in
    each of the two largest pieces of the remaining CSF (so the new class does not take
    all CSF). Brush radius 1; every stroke stays inside its reference class.

    Returns:
        (z, y, x) uint8 sparse labels (0 = not annotated, k + 1 = class k).
    """
    new_value = len(CLASSES) + 2
    sparse = np.zeros(reference.shape, np.uint8)
    for z in slices:
        near = ndimage.binary_dilation(structure[z], iterations=ring) & ~structure[z]
        targets = [
            (structure[z], new_value),
            ((reference[z] == 2) & near, 3),
            ((reference[z] == 3) & near, 4),
            ((reference[z] == 1) & ~structure[z], 2),
        ]
        for target, value in targets:
            pieces, count = ndimage.label(target, structure=np.ones((3, 3), bool))
            sizes = np.bincount(pieces.ravel())
            sizes[0] = 0
            for index in np.argsort(sizes)[::-1][: min(2, count)]:
                if sizes[index] >= 10:
                    sparse[z][stroke(pieces == index, target, length=length, radius=1)] = value
    return sparse
