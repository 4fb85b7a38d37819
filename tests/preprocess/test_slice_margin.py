"""The air a 2D model sees around each slice: padding, its geometry, and the way back."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.config import ModelConfig
from napari_medseg.preprocess import normalize_intensity, prepare, prepare_for_model, restore
from napari_medseg.preprocess.pipeline import slice_padding
from napari_medseg.types import Geometry, Volume

MARGIN_MM = 32
OBLIQUE = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def _tight_scan(spacing=(1.0, 1.0, 1.0), direction=np.eye(3)) -> Volume:
    """Foreground up to the y and x edges, as a scan cropped around a stripped brain."""
    array = np.random.default_rng(1).uniform(50, 100, (12, 20, 16)).astype(np.float32)
    array[:, :, -3:] = 0  # 3 voxels of air on one x side only
    return Volume(array, Geometry(spacing, (-4.0, 7.5, 30.0), direction))


def _config(spatial_dims: int, margin_mm: float | None = MARGIN_MM) -> ModelConfig:
    return ModelConfig(
        architecture="unet", spatial_dims=spatial_dims, in_channels=1, class_names=("background", "brain"),
        target_spacing=(1.0, 1.0, 1.0), canonical_orientation="RAS", patch_size=(16, 16) if spatial_dims == 2 else (),
        extra={} if margin_mm is None else {"slice_margin_mm": margin_mm},
    )  # fmt: skip


def test_padding_brings_the_margin_where_the_foreground_is_too_near():
    image = np.zeros((4, 50, 60), np.float32)
    image[:, 10:45, 0:60] = 1.0
    pad = slice_padding(image, (1.0, 2.0, 0.5), margin_mm=20)
    # y: 10 voxels of 2 mm before (enough), 5 after (needs 5 more); x: 40 voxels of 0.5 mm each side
    assert pad == ((0, 0), (0, 5), (40, 40))
    assert slice_padding(image, (1.0, 1.0, 1.0), margin_mm=0) == ((0, 0),) * 3
    assert slice_padding(np.zeros((3, 4, 5), np.float32), (1.0, 1.0, 1.0), margin_mm=20) == ((0, 0),) * 3


def test_a_2d_model_gets_air_around_each_slice_and_the_geometry_follows():
    volume = _tight_scan()
    prepared = prepare_for_model(volume, _config(2))
    margin = MARGIN_MM
    # RAS flips the scan's x: its 3 voxels of air come first on the model grid
    assert prepared.pad == ((0, 0), (margin, margin), (margin - 3, margin))
    assert prepared.image.shape == (12, 20 + 2 * margin, 16 + 2 * margin - 3)
    plain = prepare(volume, orientation="RAS", spacing=(1.0, 1.0, 1.0))
    np.testing.assert_array_equal(prepared.image[prepared.unpadded], plain.image)
    assert not prepared.image[:, :margin].any() and not prepared.image[:, :, :margin].any()
    # the first scan voxel sits where it did before the padding, bit for bit
    corner = np.array([[0, margin, margin - 3]])
    np.testing.assert_array_equal(prepared.geometry.index_to_physical(corner), plain.geometry.index_to_physical(np.zeros((1, 3))))


def test_only_a_2d_model_that_asks_gets_a_margin_and_bad_margins_are_refused():
    prepared = prepare_for_model(_tight_scan(), _config(2, margin_mm=None))
    assert prepared.pad == ((0, 0),) * 3 and prepared.image.shape == (12, 20, 16)
    assert _config(3, margin_mm=0).slice_margin_mm == 0
    with pytest.raises(ValueError, match="for 2D models"):
        _config(3)
    for bad in (-1, 1e6, "32", True, float("nan")):
        with pytest.raises(ValueError, match="slice_margin_mm"):
            _config(2, margin_mm=bad)


@pytest.mark.parametrize("direction", [np.eye(3), OBLIQUE], ids=["axial", "permuted"])
def test_maps_go_back_exactly_and_labels_come_in_aligned(direction):
    volume = _tight_scan(direction=direction)
    prepared = prepare_for_model(volume, _config(2))
    assert any(b or a for b, a in prepared.pad)
    back = prepared.to_input_grid(prepared.image)
    np.testing.assert_allclose(back, normalize_intensity(volume.array), rtol=1e-6)
    labels = (volume.array > 0).astype(np.uint8)
    on_model = prepared.to_model_grid(labels, linear=False)
    assert on_model.shape == prepared.image.shape
    np.testing.assert_array_equal(on_model > 0, prepared.image > 0)
    probabilities = np.stack([1 - prepared.image / prepared.image.max(), prepared.image / prepared.image.max()])
    restored = restore(probabilities, prepared)
    assert restored.shape == (*volume.shape, 2)
    np.testing.assert_array_equal(restored.argmax(-1) > 0, labels > 0)


def test_resampled_scans_keep_the_margin_and_come_back_on_their_grid():
    volume = _tight_scan(spacing=(2.0, 2.0, 2.0))
    prepared = prepare_for_model(volume, _config(2))
    assert prepared.resampled
    margin = MARGIN_MM
    assert prepared.pad[1][0] == margin and prepared.pad[1][1] >= margin - 1  # the last 1 mm voxel lies past the scan
    back = restore(np.stack([1 - prepared.image / prepared.image.max(), prepared.image / prepared.image.max()]), prepared)
    assert back.shape == (*volume.shape, 2)
    assert ((back.argmax(-1) > 0) == (volume.array > 0)).mean() > 0.97
    region = prepared.to_model_grid((volume.array > 0).astype(np.uint8), linear=False)
    assert region.shape == prepared.image.shape and not region[:, :margin].any()


def test_ct_air_is_padded_with_the_scans_own_air():
    array = np.full((4, 20, 20), -1000, np.int16)
    array[:, 1:19, 1:19] = 40
    array[:, 5:15, 5:15] = 1000
    prepared = prepare_for_model(Volume(array, Geometry((1, 1, 1), (0, 0, 0)), modality="CT"), _config(2))
    assert prepared.pad[1] == (MARGIN_MM - 1, MARGIN_MM - 1)
    air = prepared.image[prepared.unpadded].min()
    assert air < 0 and (prepared.image[:, :5] == air).all()
