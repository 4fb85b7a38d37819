"""NIfTI, NRRD and MHA reading against SimpleITK."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from napari_medseg.io import read_volume

from .sitk_reference import assert_matches_sitk


def test_dev_subject_oblique_matches_sitk(shared_data):
    path = shared_data / "dev-subject" / "t1.nii.gz"
    volume = read_volume(path)
    assert volume.geometry.is_oblique
    assert volume.shape == (142, 178, 142)
    assert_matches_sitk(volume, sitk.ReadImage(str(path)))
    assert volume.meta["format"] == "nifti"


def test_full_head_labels_header_geometry(shared_data):
    path = shared_data / "full-head-labels" / "labels_1mm.nii.gz"
    volume = read_volume(path)
    assert volume.shape == (310, 233, 197)
    # physical (LPS, z y x order) of voxel 0 is the RAS origin (-98, -134, -193) with x, y negated
    np.testing.assert_allclose(volume.geometry.index_to_physical([0, 0, 0])[0], [-193, 134, 98], atol=1e-4)
    assert set(np.unique(volume.array)) <= set(range(7))


def test_nrrd_and_mha_written_by_sitk(tmp_path):
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.5, 0.75, 2.5))
    image.SetOrigin((10.0, -20.0, 30.0))
    image.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, -1))
    for suffix in (".nrrd", ".mha", ".mhd"):
        path = tmp_path / f"image{suffix}"
        sitk.WriteImage(image, str(path))
        volume = read_volume(path)
        assert_matches_sitk(volume, sitk.ReadImage(str(path)))
        assert volume.spacing == (2.5, 0.75, 0.5)
