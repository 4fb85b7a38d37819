"""The one traversal (2D slabs and 3D windows) covers every voxel, blends back exactly,
reports progress and stops; one table over dimensions, odd shapes, overlaps and batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medseg.control import Cancelled
from napari_medseg.inference.tiling import Blend, slice_tiles, traverse, window_tiles

CASES = [
    pytest.param(2, (7, 5, 6), None, 0.5, 3, id="2d-odd-depth"),
    pytest.param(2, (1, 4, 4), None, 0.5, 8, id="2d-one-slice"),
    pytest.param(3, (9, 7, 5), (4, 4, 4), 0.5, 2, id="3d-odd-shape-half-overlap"),
    pytest.param(3, (10, 6, 6), (4, 6, 3), 0.25, 3, id="3d-quarter-overlap"),
    pytest.param(3, (5, 5, 5), (5, 5, 5), 0.0, 1, id="3d-one-window"),
    pytest.param(3, (8, 3, 11), (3, 3, 4), 0.0, 4, id="3d-no-overlap"),
]


def _tiles(dims, shape, patch, overlap, batch):
    return slice_tiles(shape[0], batch, (-1, 0, 1)) if dims == 2 else window_tiles(shape, patch, overlap, batch)


@pytest.mark.parametrize("dims, shape, patch, overlap, batch", CASES)
def test_every_voxel_is_covered_and_blends_back_exactly(dims, shape, patch, overlap, batch):
    tiles = _tiles(dims, shape, patch, overlap, batch)
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    volume = torch.from_numpy(image)
    covered = np.zeros(shape, int)
    blend = Blend(shape, tiles.weight)
    seen = []
    for regions, inputs in traverse(volume, tiles, lambda x, regions: x, progress=lambda d, t: seen.append((d, t))):
        assert len(regions) <= batch
        if dims == 2:
            (slab,) = regions
            assert inputs.shape == (slab[0].stop - slab[0].start, 3, *shape[1:])
            np.testing.assert_array_equal(inputs[:, 1].numpy(), image[slab])  # the centre channel is the slice
            covered[slab] += 1
            blend.add(slab, inputs[:, 1].numpy()[None])
        else:
            assert inputs.shape == (len(regions), 1, *patch)
            for region, window in zip(regions, inputs[:, 0].numpy()):
                covered[region] += 1
                blend.add(region, window[None])
    assert covered.min() >= 1 and (dims == 3 or covered.max() == 1)
    np.testing.assert_allclose(blend.result()[0], image, rtol=1e-6)
    assert seen[-1] == (tiles.units, tiles.units) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_context_channels_are_zero_outside_the_image():
    volume = torch.arange(1, 4, dtype=torch.float32)[:, None, None].expand(3, 2, 2).contiguous()
    tiles = slice_tiles(3, 3, (-2, 0, 2))
    ((_, inputs),) = list(traverse(volume, tiles, lambda x, regions: x))
    assert inputs[:, :, 0, 0].tolist() == [[0, 1, 3], [0, 2, 0], [1, 3, 0]]


def test_a_stop_request_ends_the_walk_before_the_next_batch():
    tiles = slice_tiles(6, 2, (0,))
    calls = []
    walk = traverse(torch.zeros(6, 2, 2), tiles, lambda x, regions: calls.append(regions), should_stop=lambda: len(calls) == 2)
    with pytest.raises(Cancelled):
        list(walk)
    assert len(calls) == 2


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: slice_tiles(4, 0, (0,)), "batch_size 0 must be a positive int"),
        (lambda: window_tiles((4, 4, 4), (2, 2, 2), 1.0, 1), r"overlap 1.0 must be in \[0, 1\)"),
        (lambda: window_tiles((4, 4, 4), (2, 2, 2), 0.5, True), "batch_size True must be a positive int"),
    ],
)
def test_bad_tilings_are_refused_by_name(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("dims", [2, 3])
def test_voxels_no_tile_reached_are_certain_background(dims, tmp_path):
    shape = (6, 4, 4)
    if dims == 2:  # into a disk-backed array on a new file, as a run over the memory budget writes
        out = np.memmap(tmp_path / "p.f32", np.float32, "w+", shape=(3, *shape))
        blend = Blend(shape, None, out)
        blend.add((slice(2, 4),), np.full((3, 2, 4, 4), 1 / 3, np.float32))
    else:
        blend = Blend(shape, window_tiles(shape, (2, 4, 4), 0.0, 1).weight)
        blend.add((slice(2, 4), slice(0, 4), slice(0, 4)), np.full((3, 2, 4, 4), 1 / 3, np.float32))
    with pytest.raises(ValueError, match="never written|reached by no window"):
        blend.result()
    result = np.asarray(blend.result(untouched_background=True))
    reached = np.zeros(shape, bool)
    reached[2:4] = True
    np.testing.assert_allclose(result[:, reached], 1 / 3, rtol=1e-6)
    assert (result[0, ~reached] == 1).all() and (result[1:, ~reached] == 0).all()
