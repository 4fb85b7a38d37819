"""Reading DICOM SEG objects: find them, decode their frames, place them on the source grid.

highdicom decodes the frames into one volume (placed by their Per-Frame Functional Groups
plane positions); when the referenced series lies beside the SEG (its folder, searched
recursively) or is given, the labels are placed onto that series' exact grid, so the
geometry is the source's bit for bit. Without it the SEG's own frame geometry is used,
with a warning. The public names are re-exported by :mod:`napari_medseg.io.dicom_seg`.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..types import Geometry, Volume
from .sitk_images import apply_geometry, image_from_array
from .errors import VolumeReadError
from .limits import check_volume_allocation

logger = logging.getLogger(__name__)

SEG_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.4"
_LABEL_VALUE = re.compile(r"label value (\d+)")
_ALIGNED_TOLERANCE = 1e-3  # voxels: DS strings keep positions to about 1e-6 mm


@dataclass(frozen=True)
class Segment:
    """One segment of a SEG as written or read.

    Attributes:
        number: segment number (1..K-1; the class index for SEGs written here).
        label: segment label (the class name).
        category: (code value, scheme, meaning) of the segmented property category.
        type: (code value, scheme, meaning) of the segmented property type.
        modifier: laterality or other type modifier, same form, or None.
        color: recommended display colour as sRGB 0-255, or None.
        label_value: the value a label file of the same classes uses, when recorded.
    """

    number: int
    label: str
    category: tuple[str, str, str]
    type: tuple[str, str, str]
    modifier: tuple[str, str, str] | None = None
    color: tuple[int, int, int] | None = None
    label_value: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_dicom_seg(path: str | Path) -> bool:
    """True when ``path`` is a DICOM file of the Segmentation Storage class (header only)."""
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "Modality"])
    except Exception:  # noqa: BLE001 - anything unreadable is not a SEG
        return False
    return str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS_UID or str(ds.get("Modality", "")) == "SEG"


def find_dicom_segs(folder: str | Path) -> list[Path]:
    """SEG files under ``folder`` (recursively, regular files only), sorted by path."""
    from .dicom import looks_like_dicom

    folder = Path(folder)
    found = [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and looks_like_dicom(p)]
    return sorted(p for p in found if is_dicom_seg(p))


def read_dicom_seg(path: str | Path, *, source: Volume | None = None) -> Volume:
    """Read a DICOM SEG as labels (segment numbers) on its source's grid.

    Args:
        path: the SEG file.
        source: the referenced scan when already read; otherwise it is looked for in
            the SEG's folder by its SeriesInstanceUID.

    Returns:
        A Volume of uint8/uint16 segment numbers (0 outside every segment) whose
        ``meta["segments"]`` lists each :class:`Segment` as a dict, with
        ``referenced_series_uid`` and the ``warnings`` raised.

    Raises:
        VolumeReadError: not a SEG, or a SEG that cannot be decoded (file named).
    """
    path = Path(path)
    if not is_dicom_seg(path):
        raise VolumeReadError(path, "not a DICOM Segmentation (SEG) object")
    seg, labels, affine, notes = decode(path)
    own = geometry_from_hd_affine(affine)
    referenced = _referenced_series_uid(seg)
    if source is None:
        source = find_source(path, referenced, notes)
    if source is not None:
        labels = place_on_grid(path, labels, own, source, notes)
        geometry = source.geometry
    else:
        geometry = own
    for note in notes:
        logger.warning("%s: %s", path, note)
    meta = {
        "source": str(path),
        "format": "dicom-seg",
        "series_uid": str(seg.get("SeriesInstanceUID", "")),
        "referenced_series_uid": referenced,
        "segments": [s.as_dict() for s in segments_of(seg)],
        "warnings": notes,
    }
    return Volume(array=labels, geometry=geometry, modality="SEG", meta=meta)


def read_series_with_segs(folder: str | Path, series_uid: str | None = None) -> list[Volume]:
    """A DICOM folder's image series (the largest unless ``series_uid``) followed by the
    SEGs in the folder that reference it, each on the series' grid. A folder that holds
    SEGs but no image series gives the SEGs alone (on their own frame geometry).

    Raises:
        VolumeReadError: as :func:`~napari_medseg.io.read_volume` for the folder.
    """
    from .dicom import find_series
    from .reader import read_volume

    segs = find_dicom_segs(folder)
    if segs and not find_series(folder):
        return [read_dicom_seg(path) for path in segs]
    image = read_volume(folder, series_uid=series_uid)
    uid = image.meta.get("series_uid")
    mine = [path for path in segs if _referenced_series_uid_of(path) == uid]
    return [image, *(read_dicom_seg(path, source=image) for path in mine)]


def _referenced_series_uid_of(path: Path) -> str | None:
    import pydicom

    return _referenced_series_uid(pydicom.dcmread(path, stop_before_pixels=True))


def segments_of(seg) -> list[Segment]:
    """The segments a SEG describes, in segment-number order."""
    return sorted((_segment(item) for item in seg.get("SegmentSequence", [])), key=lambda s: s.number)


def _segment(item) -> Segment:
    type_item = item.SegmentedPropertyTypeCodeSequence[0] if "SegmentedPropertyTypeCodeSequence" in item else None
    modifier = None
    if type_item is not None and "SegmentedPropertyTypeModifierCodeSequence" in type_item:
        modifier = _code(type_item.SegmentedPropertyTypeModifierCodeSequence[0])
    category = item.SegmentedPropertyCategoryCodeSequence[0] if "SegmentedPropertyCategoryCodeSequence" in item else None
    match = _LABEL_VALUE.fullmatch(str(item.get("SegmentDescription", "")))
    return Segment(
        number=int(item.SegmentNumber),
        label=str(item.get("SegmentLabel", "")),
        category=_code(category),
        type=_code(type_item),
        modifier=modifier,
        color=_rgb(item.get("RecommendedDisplayCIELabValue")),
        label_value=int(match.group(1)) if match else None,
    )


def _code(item) -> tuple[str, str, str]:
    """(value, scheme, meaning) of a code item; empty strings when it is missing."""
    if item is None:
        return ("", "", "")
    return (str(item.get("CodeValue", "")), str(item.get("CodingSchemeDesignator", "")), str(item.get("CodeMeaning", "")))


def _rgb(value) -> tuple[int, int, int] | None:
    if value is None:
        return None
    import highdicom as hd

    try:
        return tuple(int(c) for c in hd.color.CIELabColor.from_dicom_value([int(v) for v in value]).to_rgb(clip=True))
    except (ValueError, TypeError):
        return None


def _referenced_series_uid(seg) -> str | None:
    items = seg.get("ReferencedSeriesSequence") or []
    return str(items[0].SeriesInstanceUID) if items and "SeriesInstanceUID" in items[0] else None


def hd_affine(geometry: Geometry) -> np.ndarray:
    """highdicom's affine (slice, row, column) -> LPS (x, y, z) from ours (z, y, x) -> (z, y, x)."""
    return geometry.affine[[2, 1, 0, 3]]


def geometry_from_hd_affine(affine: np.ndarray) -> Geometry:
    """The inverse of :func:`hd_affine` (spacing from the column lengths)."""
    ours = np.asarray(affine, dtype=np.float64)[[2, 1, 0, 3]]
    linear = ours[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    return Geometry(tuple(spacing), tuple(ours[:3, 3]), tuple(map(tuple, linear / spacing)))



# ---------------------------------------------------------------- steps




def decode(path: Path) -> tuple[object, np.ndarray, np.ndarray, list[str]]:
    """Decode a SEG's frames into one volume of segment numbers.

    Returns:
        (the highdicom Segmentation, (slices, rows, columns) uint8/uint16 segment
        numbers, highdicom's 4x4 affine of that array, warnings).

    Raises:
        VolumeReadError: truncated, corrupt or too large (the file is named).
    """
    import highdicom as hd

    _check_size(path)
    try:
        seg = hd.seg.segread(path)
    except Exception as exc:  # noqa: BLE001 - highdicom/pydicom raise many kinds
        raise VolumeReadError(path, f"the DICOM SEG could not be read (corrupt or truncated): {_short(exc)}") from exc
    notes: list[str] = []
    try:
        try:
            volume = seg.get_volume(combine_segments=True)
        except ValueError as exc:
            if "overlap" not in str(exc).lower():
                raise
            volume = seg.get_volume(combine_segments=True, skip_overlap_checks=True)
            notes.append("its segments overlap: where they do, the highest segment number is shown")
    except Exception as exc:  # noqa: BLE001 - decoding errors come in many kinds
        raise VolumeReadError(path, f"the DICOM SEG's frames could not be decoded (truncated or corrupt): {_short(exc)}") from exc
    labels = np.asarray(volume.array)
    if labels.ndim != 3:
        raise VolumeReadError(path, f"the DICOM SEG decoded to shape {labels.shape}, not one volume")
    return seg, labels, np.asarray(volume.affine, dtype=np.float64), notes


def _check_size(path: Path) -> None:
    """The size gate on the declared frames before anything is decoded."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        shape = (int(ds.get("NumberOfFrames", 1) or 1), int(ds.Rows), int(ds.Columns))
    except Exception as exc:  # noqa: BLE001 - any header failure means a corrupt file
        raise VolumeReadError(path, f"the DICOM SEG's header could not be read: {_short(exc)}") from exc
    check_volume_allocation(path, shape, 1)


def find_source(path: Path, series_uid: str | None, notes: list[str]) -> Volume | None:
    """The referenced series read from the SEG's folder, or None (with a warning why)."""
    from .dicom import find_series
    from .reader import read_volume

    own = "shown on the SEG's own frame geometry"
    if not series_uid:
        notes.append(f"the SEG names no referenced series: {own}")
        return None
    folder = path.parent
    if not any(info.uid == series_uid for info in find_series(folder)):
        notes.append(f"its referenced series {series_uid} was not found beside it in {folder}: {own}")
        return None
    try:
        return read_volume(folder, series_uid=series_uid)
    except VolumeReadError as exc:
        notes.append(f"its referenced series {series_uid} could not be read ({exc.problem}): {own}")
        return None


def place_on_grid(path: Path, labels: np.ndarray, own: Geometry, source: Volume, notes: list[str]) -> np.ndarray:
    """Labels on ``own`` grid moved onto ``source``'s grid (nearest voxel).

    When the SEG's frames lie on the source grid (the usual case) every label lands on
    its own source voxel; otherwise it is resampled and a warning says so.
    """
    check_volume_allocation(path, source.shape, labels.dtype.itemsize)
    moving = image_from_array(labels, own)
    reference = apply_geometry(sitk.Image([int(n) for n in source.shape[::-1]], moving.GetPixelID()), source.geometry)
    placed = sitk.GetArrayFromImage(sitk.Resample(moving, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
    if not _aligned(own, source.geometry):
        notes.append("its frames do not lie on the source series' grid: resampled onto it (nearest voxel)")
    else:
        lost = int(np.count_nonzero(labels)) - int(np.count_nonzero(placed))
        if lost > 0:
            notes.append(f"{lost} labelled voxels lie outside the source series and were left out")
    return placed.astype(labels.dtype, copy=False)


def _aligned(own: Geometry, target: Geometry) -> bool:
    """True when every voxel of ``own`` is a voxel of ``target`` (axes swapped or flipped allowed)."""
    mapping = np.linalg.inv(target.affine) @ own.affine
    linear, offset = mapping[:3, :3], mapping[:3, 3]
    permutation = np.abs(np.round(linear))
    return bool(
        np.abs(linear - np.round(linear)).max() < _ALIGNED_TOLERANCE
        and np.array_equal(permutation.sum(axis=0), np.ones(3))
        and np.array_equal(permutation.sum(axis=1), np.ones(3))
        and np.abs(offset - np.round(offset)).max() < _ALIGNED_TOLERANCE
    )


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
