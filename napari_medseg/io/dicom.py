"""DICOM series discovery and multi-frame geometry.

SimpleITK (GDCM) decodes the pixels, rescale slope/intercept included. Enhanced
multi-frame files are a known weak spot of ITK's geometry (frame spacing defaults to 1,
per-frame positions are ignored), so their geometry is computed here from the
headers with pydicom: per-frame ImagePositionPatient, ImageOrientationPatient and
PixelSpacing from the functional groups.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import SimpleITK as sitk

from . import dicom_checks
from .errors import VolumeReadError

logger = logging.getLogger(__name__)

DICOM_SUFFIXES = {".dcm", ".dicom", ".ima"}


@dataclass
class SeriesInfo:
    """One DICOM series found in a folder."""

    uid: str
    files: list[str]
    description: str = ""
    modality: str = ""

    @property
    def n_files(self) -> int:
        return len(self.files)


def looks_like_dicom(path: str | Path) -> bool:
    """Cheap test: the 'DICM' preamble at byte 128, or a DICOM-like suffix."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def find_series(folder: str | Path) -> list[SeriesInfo]:
    """All DICOM series under ``folder`` (recursively), largest first."""
    folder = Path(folder)
    found: dict[str, SeriesInfo] = {}
    for directory, _, files in os.walk(folder):
        regular = [name for name in files if dicom_checks.inside_folder(folder, Path(directory) / name)]
        if not regular:
            continue
        with _clean_view(Path(directory), regular, len(files)) as scanned:
            for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(scanned) or ():
                names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(scanned, uid)
                names = [str(Path(directory) / Path(name).name) for name in names]
                if uid in found:
                    found[uid].files.extend(names)
                else:
                    found[uid] = SeriesInfo(uid=uid, files=names)
    for info in found.values():
        info.description, info.modality = _describe(info.files[0])
    images = [info for info in found.values() if info.modality != "SEG"]  # SEGs are read as labels
    return sorted(images, key=lambda s: (-s.n_files, s.uid))


@contextmanager
def _clean_view(directory: Path, regular: list[str], n_entries: int) -> Iterator[str]:
    """``directory`` itself when it holds only regular files inside the folder; else a
    temporary folder of links to just those, so GDCM neither meets a FIFO or device nor
    follows a link out (with one, it silently dropped other slices)."""
    if len(regular) == n_entries:
        yield str(directory)
        return
    with tempfile.TemporaryDirectory(prefix="medseg-dicom-") as view:
        for name in regular:
            os.symlink(os.path.realpath(directory / name), os.path.join(view, name))
        yield view


def _describe(path: str) -> tuple[str, str]:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - description is optional
        return "", ""
    return str(ds.get("SeriesDescription", "")), str(ds.get("Modality", ""))


def read_series(folder: str | Path, series_uid: str | None = None) -> tuple[sitk.Image, dict]:
    """Read one series of a DICOM folder; the largest one unless ``series_uid`` is given.

    Returns the image and metadata: ``series_uid``, ``modality``, ``series`` (every
    series found, as dicts), ``files``.
    """
    folder = Path(folder)
    if not any(p.is_file() for p in folder.rglob("*")):
        raise VolumeReadError(folder, "the folder is empty")
    series = find_series(folder)
    if not series:
        raise VolumeReadError(folder, "no DICOM series found in the folder")
    if series_uid is None:
        chosen = series[0]
    else:
        matches = [s for s in series if s.uid == series_uid]
        if not matches:
            listed = ", ".join(s.uid for s in series)
            raise VolumeReadError(folder, f"series {series_uid!r} not found; available: {listed}")
        chosen = matches[0]
    notes = _folder_warnings(folder, series, chosen)
    if len(chosen.files) == 1:
        image, meta = read_file(chosen.files[0])
        meta["warnings"] = notes + meta.get("warnings", [])
    else:
        headers = [_member_header(folder, name) for name in chosen.files]
        for header in headers:
            dicom_checks.check_pixel_data(header)
        notes += dicom_checks.check_series(folder, headers) + _spacing_warnings(headers)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(chosen.files)
        try:
            image = reader.Execute()
        except RuntimeError as exc:
            raise VolumeReadError(folder, f"series {chosen.uid} could not be decoded: {_itk_message(exc)}") from exc
        meta = {"modality": chosen.modality, "warnings": notes}
    meta.update(
        series_uid=chosen.uid,
        files=list(chosen.files),
        series=[
            {"uid": s.uid, "n_files": s.n_files, "description": s.description, "modality": s.modality}
            for s in series
        ],
    )
    if len(series) > 1:
        logger.info("%s holds %d series; read %s (%d files)", folder, len(series), chosen.uid, chosen.n_files)
    return image, meta


def read_file(path: str | Path) -> tuple[sitk.Image, dict]:
    """Read one DICOM file (single or multi-frame); fixes multi-frame geometry."""
    path = Path(path)
    header = dicom_checks.read_slice_header(path)
    if header is None:
        raise VolumeReadError(path, "the DICOM file holds no image (no pixel data)")
    try:
        dicom_checks.check_pixel_data(header)
    except VolumeReadError as exc:
        raise VolumeReadError(path, f"DICOM pixel data could not be decoded: {exc.problem}") from exc
    ds = header.dataset
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise VolumeReadError(
            path, f"DICOM pixel data could not be decoded (truncated, corrupt or unsupported): {_itk_message(exc)}"
        ) from exc
    meta: dict = {"modality": str(ds.get("Modality", "")), "series_uid": str(ds.get("SeriesInstanceUID", ""))}
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if image.GetDimension() == 3 and frames > 1:
        image, notes = _fix_multiframe_geometry(image, ds)
        meta["warnings"] = notes
    return image, meta


def _fix_multiframe_geometry(image: sitk.Image, ds) -> tuple[sitk.Image, list[str]]:
    """Replace ITK's multi-frame geometry with the one the headers declare."""
    notes: list[str] = []
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None
    per_frame = list(ds.PerFrameFunctionalGroupsSequence) if "PerFrameFunctionalGroupsSequence" in ds else []

    def lookup(group: str, attribute: str, frame=None):
        for source in ([frame] if frame is not None else []) + ([shared] if shared is not None else []) + [ds]:
            if source is None:
                continue
            if source is ds:
                value = ds.get(attribute)
            elif group in source and len(source[group].value):
                value = source[group].value[0].get(attribute)
            else:
                value = None
            if value is not None:
                return [float(v) for v in value] if isinstance(value, (list, pydicom_multivalue())) else float(value)
        return None

    orientation = lookup("PlaneOrientationSequence", "ImageOrientationPatient", per_frame[0] if per_frame else None)
    pixel_spacing = lookup("PixelMeasuresSequence", "PixelSpacing", per_frame[0] if per_frame else None)
    positions = [lookup("PlanePositionSequence", "ImagePositionPatient", frame) for frame in per_frame]
    positions = [p for p in positions if p is not None]
    n_frames = image.GetSize()[2]

    if orientation is None:
        notes.append("no ImageOrientationPatient: axial orientation assumed")
        orientation = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    row = np.array(orientation[:3])
    col = np.array(orientation[3:])
    normal = np.cross(row, col)
    if pixel_spacing is None:
        notes.append("no PixelSpacing: in-plane spacing of 1 mm assumed")
        pixel_spacing = [1.0, 1.0]

    array = sitk.GetArrayFromImage(image)
    if len(positions) == n_frames:
        points = np.array(positions)
        projection = points @ normal
        if np.all(np.diff(projection) < 0):  # keep file order; slice axis points the other way
            normal = -normal
            projection = -projection
        order = np.argsort(projection, kind="stable")
        steps = np.diff(projection[order])
        if n_frames > 1 and np.any(steps <= 1e-6):
            raise_msg = "several frames share one position (a time series or multiple stacks)"
            notes.append(raise_msg + ": frames kept in file order, spacing from the headers")
            slice_spacing = _declared_slice_spacing(ds, lookup) or 1.0
            origin = points[0]
        else:
            if n_frames > 1 and (steps.max() - steps.min()) > 0.01 * steps.mean():
                notes.append(f"frame spacing is not uniform ({steps.min():.4g}-{steps.max():.4g} mm); mean used")
            slice_spacing = float(steps.mean()) if n_frames > 1 else (_declared_slice_spacing(ds, lookup) or 1.0)
            origin = points[order[0]]
            if not np.array_equal(order, np.arange(n_frames)):
                array = array[order]
                notes.append("frames reordered by their position along the slice normal")
    else:
        declared = _declared_slice_spacing(ds, lookup)
        notes.append(
            "no per-frame positions: slice spacing taken from "
            + ("SpacingBetweenSlices/SliceThickness" if declared else "a default of 1 mm")
        )
        slice_spacing = declared or 1.0
        position = lookup("PlanePositionSequence", "ImagePositionPatient")
        origin = np.array(position) if position is not None else np.zeros(3)

    fixed = sitk.GetImageFromArray(array)
    fixed.SetSpacing((pixel_spacing[1], pixel_spacing[0], slice_spacing))
    fixed.SetOrigin(tuple(float(v) for v in origin))
    fixed.SetDirection(tuple(np.column_stack([row, col, normal]).ravel()))
    return fixed, notes


def _member_header(folder: Path, name: str) -> dicom_checks.SliceHeader:
    """The header of one series member; a member without an image is refused by name."""
    header = dicom_checks.read_slice_header(name)
    if header is None:
        raise VolumeReadError(folder, f"series member {Path(name).name} holds no image (no Rows/Columns)")
    return header


def _folder_warnings(folder: Path, series: list[SeriesInfo], chosen: SeriesInfo) -> list[str]:
    """Entries that were skipped: special files, links out, DICOM files in no series.

    A skipped file of the chosen series (e.g. truncated) refuses the read by name.
    """
    notes = []
    irregular = dicom_checks.irregular_entries(folder)
    if irregular:
        notes.append(f"{len(irregular)} entries skipped, not regular files in the folder: {', '.join(irregular[:5])}")
    used = {os.path.realpath(name) for info in series for name in info.files}
    unread = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink() and os.path.realpath(path) not in used:
            uid = _unread_image_series(path)
            if uid == chosen.uid:
                _refuse_member(folder, path)
            if uid is not None:
                unread.append(str(path.relative_to(folder)))
    if unread:
        notes.append(f"{len(unread)} DICOM files could not be read into any series: {', '.join(unread[:5])}")
    return notes


def _refuse_member(folder: Path, path: Path) -> None:
    """Raise the precise reason a member of the chosen series was left out."""
    header = dicom_checks.read_slice_header(path)
    if header is not None:
        dicom_checks.check_pixel_data(header)
    raise VolumeReadError(folder, f"series member {path.relative_to(folder)} could not be decoded; refused")


def _unread_image_series(path: Path) -> str | None:
    """For a file no series took: its SeriesInstanceUID ('' when unreadable or unknown)
    if it looks like a DICOM image, None when it is not DICOM or holds no image."""
    import pydicom

    if not looks_like_dicom(path):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - any failure means unreadable
        return ""
    meta = getattr(ds, "file_meta", None)
    has_class = "SOPClassUID" in ds or (meta is not None and "MediaStorageSOPClassUID" in meta)
    if has_class and ("Rows" not in ds or ds.get("Modality") == "SEG"):
        return None  # a DICOMDIR, report, plan or segmentation: not an image
    return str(ds.get("SeriesInstanceUID", ""))


def _spacing_warnings(headers: list[dicom_checks.SliceHeader]) -> list[str]:
    """Warn when the slices of a series are not evenly spaced along their normal."""
    if len(headers) < 3 or any(h.position is None or h.orientation is None for h in headers):
        return []
    orientation = np.array(headers[0].orientation)
    normal = np.cross(orientation[:3], orientation[3:])
    along = np.sort(np.array([h.position for h in headers]) @ normal)
    steps = np.diff(along)
    if steps.max() - steps.min() > 0.01 * max(steps.mean(), 1e-6):
        return [f"slices are not evenly spaced ({steps.min():.4g}-{steps.max():.4g} mm apart): missing slices or a mixed series"]
    return []


def _declared_slice_spacing(ds, lookup) -> float | None:
    for attribute in ("SpacingBetweenSlices", "SliceThickness"):
        value = lookup("PixelMeasuresSequence", attribute)
        if value:
            return float(value)
    return None


def pydicom_multivalue():
    from pydicom.multival import MultiValue

    return MultiValue


def _itk_message(exc: Exception) -> str:
    """The last meaningful line of an ITK exception."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
