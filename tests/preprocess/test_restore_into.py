"""prepare from the stored dtype and restore class by class: the same values as the
whole-volume float32 path they replaced, in memory and into a disk-backed array."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.io.limits import release_heap, release_pages
from napari_medseg.preprocess import classes_last, normalize_intensity, prepare, restore, restore_into
from napari_medseg.preprocess.pipeline import Prepared, resample_array
from napari_medseg.types import Geometry, Volume

PERMUTED = np.array([[0, 0, 1], [0, -1, 0], [1, 0, 0]], dtype=float)


def _ct(shape=(14, 18, 22), seed=0) -> np.ndarray:
    """(z, y, x) int16: air, noisy soft tissue, a bright block."""
    rng = np.random.default_rng(seed)
    array = np.full(shape, -1000, np.int16)
    array[2:-2, 3:-3, 3:-3] = rng.normal(40, 15, (shape[0] - 4, shape[1] - 6, shape[2] - 6)).astype(np.int16)
    array[5:8, 6:10, 6:12] = 1000
    return array


def _whole_volume_prepare(volume: Volume, prepared: Prepared) -> np.ndarray:
    """The model-grid image as computed before: a float32 copy of the scan, then resampled."""
    from napari_medseg.preprocess.orientation import reorient

    canonical, _ = reorient(volume, "RAS")
    image = np.ascontiguousarray(canonical.array, dtype=np.float32)
    if prepared.resampled:
        image = resample_array(image, canonical.geometry, prepared.geometry, prepared.image.shape, linear=True)
    return normalize_intensity(image)


def _whole_volume_restore(probabilities: np.ndarray, prepared: Prepared) -> np.ndarray:
    """Probabilities mapped back as before: all classes at once, then transposed."""
    if prepared.resampled:
        back = np.stack([
            resample_array(p, prepared.geometry, prepared.canonical_geometry, prepared.canonical_shape, linear=True)
            for p in probabilities
        ])  # fmt: skip
        back = np.clip(back, 0, None)
        back /= np.maximum(back.sum(axis=0, keepdims=True), 1e-6)
    else:
        back = probabilities
    restored = prepared.reorientation.invert(back, channel_axis=0)
    return np.ascontiguousarray(np.moveaxis(restored, 0, -1), dtype=np.float32)


def _softmax_like(image: np.ndarray, k: int = 4) -> np.ndarray:
    """(K, *S) float32 probabilities that depend on the image (ties broken by it)."""
    logits = np.stack([np.sin(image * (c + 1) * 3.0 + c) for c in range(k)]).astype(np.float32)
    e = np.exp(logits - logits.max(axis=0))
    return (e / e.sum(axis=0)).astype(np.float32)


def _restore_case(geometry: Geometry):
    """A CT-like scan on ``geometry`` prepared for a 1 mm RAS model: the preparation,
    image-dependent model-grid probabilities, and the whole-volume path's restored result."""
    volume = Volume(_ct(), geometry, modality="CT")
    prepared = prepare(volume, orientation="RAS", spacing=(1.0, 1.0, 1.0))
    probabilities = _softmax_like(prepared.image)
    return prepared, probabilities, _whole_volume_restore(probabilities, prepared)


CASES = [
    pytest.param(Geometry((0.8, 0.7, 0.7), (1.0, -2.0, 3.0)), id="ct-spacing-resampled"),
    pytest.param(Geometry((1.6, 0.7, 0.9), (0.0, 0.0, 0.0), PERMUTED), id="permuted-resampled"),
    pytest.param(Geometry((1.0, 1.05, 0.95), (5.0, 0.0, 0.0), PERMUTED), id="permuted-not-resampled"),
]


@pytest.mark.parametrize("geometry", CASES)
def test_prepare_from_int16_equals_the_float32_path(geometry):
    volume = Volume(_ct(), geometry, modality="CT")
    prepared = prepare(volume, orientation="RAS", spacing=(1.0, 1.0, 1.0))
    assert prepared.image.dtype == np.float32
    np.testing.assert_array_equal(prepared.image, _whole_volume_prepare(volume, prepared))
    assert volume.array.dtype == np.int16 and np.array_equal(volume.array, _ct())  # input untouched


@pytest.mark.parametrize("geometry", CASES)
def test_restore_class_by_class_equals_the_whole_volume_path(geometry, tmp_path):
    prepared, probabilities, expected = _restore_case(geometry)
    before = probabilities.copy()
    np.testing.assert_array_equal(restore(probabilities, prepared), expected)
    disk = np.memmap(tmp_path / "p.f32", dtype=np.float32, mode="w+", shape=expected.shape)
    assert restore_into(probabilities, prepared, disk, slab=3) is disk
    np.testing.assert_array_equal(np.asarray(disk), expected)
    np.testing.assert_array_equal(probabilities, before)  # the caller's array is left as found


@pytest.mark.parametrize("geometry", CASES)
def test_restored_probabilities_are_class_major(geometry, tmp_path):
    """Each class's volume is one contiguous block, in memory and in a class-major memmap."""
    prepared, probabilities, expected = _restore_case(geometry)
    restored = restore(probabilities, prepared)
    assert restored.shape == expected.shape
    assert all(restored[..., c].flags.c_contiguous for c in range(restored.shape[-1]))
    disk = classes_last(np.memmap(tmp_path / "p.f32", dtype=np.float32, mode="w+", shape=(4, *expected.shape[:3])))
    assert isinstance(disk, np.memmap) and restore_into(probabilities, prepared, disk, slab=5) is disk
    np.testing.assert_array_equal(np.asarray(disk), expected)


@pytest.mark.parametrize("geometry", CASES)
def test_classes_zero_over_much_of_the_grid_restore_as_the_whole_volume_path(geometry, tmp_path):
    """Certain background outside a central box, as after the brain locator: the slabs a
    class does not reach are left unwritten in the zero-filled output, with the same values."""
    prepared, probabilities, _ = _restore_case(geometry)
    outside = np.ones(probabilities.shape[1:], bool)
    outside[4:9, 5:12, 6:14] = False
    probabilities[0][outside] = 1.0
    probabilities[1:, outside] = 0.0
    probabilities[3, :6] = 0.0  # a class absent from whole slabs inside the box too
    probabilities /= probabilities.sum(axis=0, keepdims=True)
    expected = _whole_volume_restore(probabilities, prepared)
    np.testing.assert_array_equal(restore(probabilities, prepared), expected)
    disk = classes_last(np.memmap(tmp_path / "p.f32", dtype=np.float32, mode="w+", shape=(4, *expected.shape[:3])))
    np.testing.assert_array_equal(np.asarray(restore_into(probabilities, prepared, disk, slab=2)), expected)
    assert not expected[:2, ..., 1:].any() or not expected[-2:, ..., 1:].any()  # whole slabs were skipped


def test_restore_into_refuses_a_wrong_array():
    volume = Volume(_ct(), Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))
    prepared = prepare(volume, orientation="LPS", spacing=(1.0, 1.0, 1.0))
    probabilities = _softmax_like(prepared.image, k=2)
    with pytest.raises(ValueError, match=r"output array \(14, 18, 22, 2\) float64 must be \(14, 18, 22, 2\) float32"):
        restore_into(probabilities, prepared, np.empty((14, 18, 22, 2)))
    with pytest.raises(ValueError, match=r"\(14, 18, 22, 3\) float32 must be"):
        restore_into(probabilities, prepared, np.empty((14, 18, 22, 3), np.float32))


def test_release_pages_keeps_the_data(tmp_path):
    release_pages(np.ones(3))  # in memory: nothing to do
    disk = np.memmap(tmp_path / "a.f32", dtype=np.float32, mode="w+", shape=(64, 1024))
    disk[:] = 2.5
    release_pages(disk)
    assert float(disk.sum()) == 2.5 * disk.size
    assert np.fromfile(tmp_path / "a.f32", np.float32).sum() == 2.5 * disk.size
    # Changes dropped from memory without a flush reach the file before the array is touched again.
    disk[:] = np.arange(disk.size, dtype=np.float32).reshape(disk.shape)
    release_pages(disk)
    np.testing.assert_array_equal(np.fromfile(tmp_path / "a.f32", np.float32), np.arange(disk.size, dtype=np.float32))
    np.testing.assert_array_equal(np.asarray(disk).ravel(), np.arange(disk.size, dtype=np.float32))


@pytest.mark.parametrize("geometry", CASES)
def test_restore_from_a_disk_backed_model_grid_and_without_the_model_image(geometry, tmp_path):
    """The network's probabilities in a memmap and the image dropped: the same values."""
    prepared, probabilities, expected = _restore_case(geometry)
    on_disk = np.memmap(tmp_path / "model.f32", dtype=np.float32, mode="w+", shape=probabilities.shape)
    on_disk[...] = probabilities
    shape = prepared.image.shape
    prepared.drop_image()
    assert prepared.image.shape == shape and prepared.image.strides == (0, 0, 0) and not prepared.image.flags.writeable
    np.testing.assert_array_equal(restore(on_disk, prepared), expected)


def test_resampling_without_a_reference_image_equals_resampling_onto_one():
    """The output grid given by size, origin, spacing and direction: SimpleITK's values with
    a full-size reference image, bit for bit (an oblique, permuted target included)."""
    import SimpleITK as sitk

    from napari_medseg.io.sitk_images import apply_geometry
    from napari_medseg.preprocess.pipeline import resample_image

    rng = np.random.default_rng(3)
    source = Geometry((1.0, 1.0, 1.0), (0.5, -3.0, 2.0))
    angle = 0.3
    oblique = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]]) @ PERMUTED
    array = rng.random((16, 18, 20)).astype(np.float32)
    for target, shape in ((Geometry((0.8, 0.7, 0.7), (1.0, -2.0, 3.0)), (19, 25, 27)),
                          (Geometry((1.3, 0.9, 1.1), (2.0, 1.0, -1.0), oblique), (12, 17, 15))):  # fmt: skip
        for linear in (True, False):
            got = sitk.GetArrayFromImage(resample_image(array, source, target, shape, linear=linear))
            image = apply_geometry(sitk.GetImageFromArray(array), source)
            reference = apply_geometry(sitk.Image([int(n) for n in shape[::-1]], sitk.sitkUInt8), target)
            method = sitk.sitkLinear if linear else sitk.sitkNearestNeighbor
            expected = sitk.GetArrayFromImage(sitk.Resample(image, reference, sitk.Transform(), method, 0.0, image.GetPixelID()))
            np.testing.assert_array_equal(got, expected)


def test_release_heap_frees_nothing_in_use():
    kept = [np.full(1000 + i, float(i)) for i in range(200)]
    del kept[::2]  # freed blocks among live ones
    release_heap()
    assert all(float(a.sum()) == (1000 + 2 * j + 1) * (2 * j + 1) for j, a in enumerate(kept))
