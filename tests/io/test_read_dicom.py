"""DICOM files, series folders and enhanced multi-frame objects against SimpleITK."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from napari_medseg.io import VolumeReadError, read_volume

from .sitk_reference import assert_matches_sitk


def test_ct_small_in_hounsfield_units(pydicom_files):
    path = pydicom_files / "CT_small.dcm"
    volume = read_volume(path)
    assert volume.modality == "CT"
    assert_matches_sitk(volume, sitk.ReadImage(str(path)))
    ds = pydicom.dcmread(path)
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(volume.array[0], expected)
    assert volume.array.min() < -800  # air in HU


def test_mr_rescale_slope_applied(pydicom_data_files):
    path = pydicom_data_files / "MR2_UNCI.dcm"
    volume = read_volume(path)
    ds = pydicom.dcmread(path)
    assert float(ds.RescaleSlope) != 1.0
    assert_matches_sitk(volume, sitk.ReadImage(str(path)))
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(volume.array[0], expected, rtol=1e-6)


def test_dicom_folder_reads_largest_series_and_lists_all(pydicom_files):
    folder = pydicom_files / "dicomdirtests"
    volume = read_volume(folder)
    series = volume.meta["series"]
    assert len(series) > 3
    assert series[0]["n_files"] == max(s["n_files"] for s in series)
    assert volume.meta["series_uid"] == series[0]["uid"]
    assert volume.shape[0] == series[0]["n_files"]


def test_dicom_series_selected_by_uid_matches_sitk(pydicom_files):
    folder = pydicom_files / "dicomdirtests" / "98892001" / "CT5N"
    uid = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))[0]
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reference = reader.Execute()
    volume = read_volume(pydicom_files / "dicomdirtests", series_uid=uid)
    assert volume.meta["series_uid"] == uid
    assert volume.modality == "CT"
    assert_matches_sitk(volume, reference)


def test_unknown_series_uid_names_the_available_ones(pydicom_files):
    with pytest.raises(VolumeReadError, match="not found; available"):
        read_volume(pydicom_files / "dicomdirtests", series_uid="1.2.3.4")


def test_full_head_mprage_series(shared_data):
    folder = shared_data / "full-head-mprage"
    volume = read_volume(folder)
    assert volume.shape == (176, 256, 256)
    assert volume.modality == "MR"
    uid = volume.meta["series_uid"]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
    assert_matches_sitk(volume, reader.Execute())


def test_jpeg2000_compressed_file(pydicom_files):
    path = pydicom_files / "MR_small_jp2klossless.dcm"
    volume = read_volume(path)
    reference = read_volume(pydicom_files / "MR_small.dcm")
    np.testing.assert_array_equal(volume.array, reference.array)


def _frame_positions(ds) -> np.ndarray:
    return np.array(
        [[float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient] for f in ds.PerFrameFunctionalGroupsSequence]
    )


def test_enhanced_ct_geometry_from_frame_positions(pydicom_data_files):
    path = pydicom_data_files / "eCT_Supplemental.dcm"
    volume = read_volume(path)
    ds = pydicom.dcmread(path)
    positions = _frame_positions(ds)
    assert volume.shape[0] == int(ds.NumberOfFrames) == 2
    assert volume.spacing[0] == pytest.approx(np.linalg.norm(positions[1] - positions[0]))
    # the first voxel of every frame sits at that frame's ImagePositionPatient (LPS x, y, z)
    for k in range(volume.shape[0]):
        np.testing.assert_allclose(volume.geometry.index_to_physical([k, 0, 0])[0], positions[k][::-1], atol=1e-6)
    assert volume.modality == "CT"
    assert volume.array.min() < -900  # rescale intercept -1024 applied
    assert_matches_sitk(volume, sitk.ReadImage(str(path)))


def test_enhanced_mr_slice_spacing_from_headers(pydicom_data_files):
    """emri_small carries no per-frame positions, only SpacingBetweenSlices (1.2 mm).

    ITK assumes 1 mm between frames; the header's distance between frames wins.
    """
    path = pydicom_data_files / "emri_small.dcm"
    volume = read_volume(path)
    ds = pydicom.dcmread(path)
    assert volume.shape == (10, 64, 64)
    assert sitk.ReadImage(str(path)).GetSpacing()[2] == 1.0
    assert volume.spacing[0] == pytest.approx(float(ds.SpacingBetweenSlices))
    assert any("no per-frame positions" in w for w in volume.warnings)
    assert_matches_sitk(volume, sitk.ReadImage(str(path)), check_geometry=False)


def test_multiframe_in_reverse_order_keeps_physical_positions(tmp_path, pydicom_data_files):
    """Frames stored in reverse order still put every voxel at its physical position."""
    ds = pydicom.dcmread(pydicom_data_files / "eCT_Supplemental.dcm")
    frames = ds.pixel_array.copy()
    groups = ds.PerFrameFunctionalGroupsSequence
    ds.PerFrameFunctionalGroupsSequence = pydicom.Sequence([groups[1], groups[0]])
    ds.PixelData = frames[::-1].tobytes()
    path = tmp_path / "swapped.dcm"
    ds.save_as(path)
    # two frames in reverse order form a monotonic stack: kept in file order, axis flipped
    original = read_volume(pydicom_data_files / "eCT_Supplemental.dcm")
    swapped = read_volume(path)
    for k in range(2):
        p = swapped.geometry.index_to_physical([k, 5, 7])[0]
        index = np.round(original.geometry.physical_to_index(p)[0]).astype(int)
        assert swapped.array[k, 5, 7] == original.array[tuple(index)]
