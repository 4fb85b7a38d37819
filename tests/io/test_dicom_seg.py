"""DICOM SEG out and in: geometry, segments, highdicom's own reader, real and broken files."""

from __future__ import annotations

import shutil
import subprocess
import sys

import highdicom as hd
import numpy as np
import pydicom
import pytest

from napari_medseg.io import VolumeReadError, VolumeWriteError, read_volume, write_volume
from napari_medseg.io.dicom_seg import dicom_seg_problem, read_series_with_segs, write_dicom_seg
from napari_medseg.io.seg_codes import segment_codes
from tests.dicom_series import FRAME_OF_REFERENCE_UID, STUDY_UID, oblique_direction, write_series

CLASSES = ["background", "left putamen", "CSF", "unusual blob"]
COLORS = [(0, 0, 0, 0), (1.0, 0.0, 0.0, 1.0), (0.0, 0.4, 1.0, 1.0), (0.5, 0.5, 0.5, 1.0)]
LABEL_VALUES = [0, 12, 24, 99]
DIRECTIONS = {"axial": None, "oblique": oblique_direction()}


def _scan(folder, direction):
    rng = np.random.default_rng(0)
    write_series(folder, rng.integers(0, 1000, (7, 18, 21)), (2.5, 0.9, 1.1), (-30.0, 12.5, 40.25), direction)
    return read_volume(folder)


def _labels(shape):
    labels = np.zeros(shape, np.uint8)
    labels[1:4, 5:10, 3:12] = 1
    labels[2:6, 11:17, 10:20] = 3
    labels[5, 0:3, 0:4] = 2  # one slice apart from the rest: a frame range with empty slices between
    return labels


def _write(path, labels, scan):
    return write_dicom_seg(path, labels, scan, class_names=CLASSES, class_colors=COLORS, label_values=LABEL_VALUES,
                           algorithm=("tiny-unet", "3"))  # fmt: skip


@pytest.fixture(params=sorted(DIRECTIONS))
def written(request, tmp_path):
    """(scan volume, labels, SEG path) with the SEG in the series' folder."""
    scan = _scan(tmp_path / "series", DIRECTIONS[request.param])
    labels = _labels(scan.shape)
    return scan, labels, _write(tmp_path / "series" / "series_seg.dcm", labels, scan)


def test_round_trip_keeps_labels_and_geometry_bit_exactly(written):
    scan, labels, path = written
    back = read_volume(path)
    np.testing.assert_array_equal(back.array, labels)
    assert back.geometry.spacing == scan.geometry.spacing
    assert back.geometry.origin == scan.geometry.origin
    assert back.geometry.direction == scan.geometry.direction
    assert back.warnings == [] and back.meta["format"] == "dicom-seg"


def test_a_folder_with_a_series_and_its_seg_opens_both(written):
    scan, labels, path = written
    image, seg = read_series_with_segs(path.parent)
    np.testing.assert_array_equal(image.array, scan.array)
    assert image.warnings == []  # the SEG is neither read as the series nor reported as unread
    np.testing.assert_array_equal(seg.array, labels)
    assert seg.geometry == image.geometry


def test_segments_carry_names_codes_colours_and_label_values(written):
    _, _, path = written
    segments = read_volume(path).meta["segments"]
    assert [s["number"] for s in segments] == [1, 2, 3]
    assert [s["label"] for s in segments] == CLASSES[1:]
    assert [s["label_value"] for s in segments] == LABEL_VALUES[1:]
    putamen, csf, blob = segments
    assert putamen["category"] == ("91723000", "SCT", "Anatomical Structure")
    assert putamen["type"] == ("89278009", "SCT", "Putamen") and putamen["modifier"] == ("7771000", "SCT", "Left")
    assert csf["category"] == ("85756007", "SCT", "Tissue") and csf["type"] == ("65216001", "SCT", "Cerebrospinal Fluid")
    assert blob["type"] == ("85756007", "SCT", "Tissue") and blob["modifier"] is None
    for segment, color in zip(segments, COLORS[1:]):
        np.testing.assert_allclose(segment["color"], np.array(color[:3]) * 255, atol=1.5)  # through CIELab


def test_highdicom_reads_what_we_write(written):
    scan, labels, path = written
    seg = hd.seg.segread(path)
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in scan.meta["files"]]
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    assert seg.SegmentationType == "BINARY" and seg.number_of_segments == 3
    assert seg.StudyInstanceUID == STUDY_UID and seg.FrameOfReferenceUID == FRAME_OF_REFERENCE_UID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == scan.meta["series_uid"]
    referenced = {item.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {ds.SOPInstanceUID for ds in sources}
    by_position = sorted(sources, key=lambda ds: _slice_index(scan, ds))
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[ds.SOPInstanceUID for ds in by_position], combine_segments=True
    )
    np.testing.assert_array_equal(pixels, labels)


def _slice_index(scan, ds) -> int:
    index = scan.geometry.physical_to_index(np.array([float(v) for v in ds.ImagePositionPatient])[::-1])
    return int(round(index[0, 0]))


def test_label_values_must_be_class_indices(tmp_path):
    scan = _scan(tmp_path / "series", None)
    labels = _labels(scan.shape)
    labels[0, 0, 0] = 12  # a written label value, not a class index
    with pytest.raises(ValueError, match="label 12 names no class of 4"):
        _write(tmp_path / "bad.dcm", labels, scan)


def test_a_scan_not_from_dicom_is_refused_by_name(tmp_path):
    scan = _scan(tmp_path / "series", None)
    nifti = read_volume(write_volume(tmp_path / "scan.nii.gz", scan.array, scan))
    assert "not read from DICOM (format nifti)" in dicom_seg_problem(nifti.meta)
    with pytest.raises(VolumeWriteError, match=r"out\.dcm: a DICOM SEG needs a scan read from DICOM"):
        _write(tmp_path / "out.dcm", _labels(nifti.shape), nifti)


def test_seg_without_its_series_opens_on_its_own_frames_with_a_warning(written, tmp_path):
    scan, labels, path = written
    alone = tmp_path / "elsewhere" / "alone.dcm"
    alone.parent.mkdir()
    shutil.copy(path, alone)
    back = read_volume(alone)
    assert any("was not found beside it" in w for w in back.warnings)
    assert np.count_nonzero(back.array) == np.count_nonzero(labels)
    first = np.argwhere(labels.any(axis=(1, 2)))[:, 0]
    corners = back.geometry.index_to_physical(np.argwhere(back.array > 0))
    np.testing.assert_allclose(scan.geometry.physical_to_index(corners)[:, 0].min(), first.min(), atol=1e-4)


def test_corrupt_seg_is_a_clear_error_naming_the_file(written, tmp_path):
    _, _, path = written
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(VolumeReadError, match=r"broken\.dcm: the DICOM SEG's frames could not be decoded"):
        read_volume(broken)


def test_real_liver_seg_opens(pydicom_data_files):
    volume = read_volume(pydicom_data_files / "liver.dcm")
    assert [s["label"] for s in volume.meta["segments"]] == ["Liver"]
    assert volume.shape == (3, 512, 512) and set(np.unique(volume.array)) == {0, 1}
    assert any("referenced series" in w for w in volume.warnings)  # its CT is not in the wheel


@pytest.mark.parametrize(
    ("name", "category", "kind", "modifier"),
    [
        ("grey matter", "Tissue", "Gray Matter", None),
        ("White Matter", "Tissue", "White Matter", None),
        ("right hippocampus", "Anatomical Structure", "Hippocampus", "Right"),
        ("3rd ventricle", "Anatomical Structure", "Third ventricle", None),
        ("left cerebellum cortex", "Anatomical Structure", "Cerebellar Cortex", "Left"),
        ("brain stem", "Anatomical Structure", "Brain Stem", None),
        ("left ventral DC", "Tissue", "Tissue", None),
        ("lesion core", "Tissue", "Tissue", None),
    ],
)
def test_class_names_get_snomed_codes(name, category, kind, modifier):
    codes = segment_codes(name)
    assert codes.category.scheme_designator == "SCT" and codes.category.meaning == category
    assert codes.type.meaning.lower() == kind.lower()
    assert (codes.modifier.meaning if codes.modifier else None) == modifier


def test_a_scan_not_read_from_dicom_is_answered_without_loading_pydicom():
    """Asked for every NIfTI that ``medseg segment`` reads: half a second of imports it never needs."""
    code = (
        "import sys; from napari_medseg.io.dicom_seg import dicom_seg_problem;"
        "print(dicom_seg_problem({'format': 'nifti'})); print('pydicom' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["it was not read from DICOM (format nifti)", "False"]
