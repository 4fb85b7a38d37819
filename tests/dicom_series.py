"""Small DICOM series built with pydicom, with any spacing, origin and (oblique) direction."""

from __future__ import annotations

from pathlib import Path

import numpy as np

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
FRAME_OF_REFERENCE_UID = "1.2.826.0.1.3680043.8.498.2"


def write_series(
    folder: Path,
    array: np.ndarray,
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float],
    direction: np.ndarray | None = None,
    *,
    series_uid: str = "1.2.826.0.1.3680043.8.498.3",
    modality: str = "MR",
) -> list[Path]:
    """Write ``array`` (z, y, x, int16) as one single-frame file per slice.

    ``spacing``, ``origin`` and ``direction`` (columns: unit vectors of the array axes)
    are in (z, y, x) order as in :class:`napari_medseg.types.Geometry`; the slice axis
    must be the normal of the rows and columns (a right-handed frame), as scanners write.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    direction = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
    row_xyz, col_xyz = direction[::-1, 2], direction[::-1, 1]
    paths = []
    for k, plane in enumerate(np.asarray(array, dtype=np.int16)):
        position_zyx = np.asarray(origin) + direction @ (np.asarray(spacing) * np.array([k, 0.0, 0.0]))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"slice{k:03d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Phantom", "P1", "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY_UID, series_uid
        ds.FrameOfReferenceUID = FRAME_OF_REFERENCE_UID
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", ""
        ds.ReferringPhysicianName = ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, 1, k + 1
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[2])]
        ds.SliceThickness = _ds(spacing[0])
        ds.ImageOrientationPatient = [_ds(v) for v in (*row_xyz, *col_xyz)]
        ds.ImagePositionPatient = [_ds(v) for v in position_zyx[::-1]]
        ds.PixelData = plane.tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def oblique_direction(degrees: float = 20.0) -> np.ndarray:
    """A right-handed (z, y, x) direction rotated about two axes (not a permutation)."""
    a, b = np.radians(degrees), np.radians(degrees / 2)
    about_x = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    about_z = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return about_x @ about_z


def _ds(value: float) -> str:
    """A decimal string of at most 16 characters."""
    return f"{float(value):.10g}"
