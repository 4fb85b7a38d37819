"""DICOM Segmentation objects (SEG) in and out, through highdicom.

Writing: a labels array of class indices on a scan read from DICOM becomes a BINARY SEG
that references the source series (study, series and frame-of-reference UIDs, every
source image as a referenced instance, per-frame derivation references) with one
segment per class, background excluded: segment number k is class k, its label the
class name, its colour the class colour (CIELab) and its coded category/type from
:mod:`.seg_codes`. A bundle's written label value (e.g. a FreeSurfer id) is kept in the
segment's description as ``label value N``. BINARY rather than LABELMAP because every
SEG reader understands it (LABELMAP arrived in DICOM 2024 and many viewers and PACS
do not read it yet); empty frames are left out, so the size stays small.

Reading (:func:`read_dicom_seg`, :func:`read_series_with_segs`) lives in
:mod:`.dicom_seg_read` and is re-exported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..types import Volume
from .dicom_seg_read import (
    SEG_SOP_CLASS_UID,
    Segment,
    find_dicom_segs,
    geometry_from_hd_affine,
    hd_affine,
    is_dicom_seg,
    read_dicom_seg,
    read_series_with_segs,
    segments_of,
)
from .errors import VolumeWriteError

__all__ = [
    "SEG_SOP_CLASS_UID",
    "Segment",
    "dicom_seg_problem",
    "dicom_source_files",
    "find_dicom_segs",
    "geometry_from_hd_affine",
    "hd_affine",
    "is_dicom_seg",
    "read_dicom_seg",
    "read_series_with_segs",
    "segments_of",
    "write_dicom_seg",
]


def dicom_source_files(meta: dict[str, Any]) -> list[str]:
    """The files of the DICOM series a volume (or layer) was read from; [] when not DICOM.

    ``meta`` is a :class:`Volume`'s ``meta`` or a layer's ``medseg`` metadata: the
    series' ``files`` when kept, else the ``source`` file, else the ``series_uid`` found
    again in the ``source`` folder.
    """
    if meta.get("format") != "dicom":
        return []
    if meta.get("files"):
        return [str(f) for f in meta["files"]]
    source = Path(meta.get("source", ""))
    if source.is_file():
        return [str(source)]
    if source.is_dir():
        from .dicom import find_series

        uid = meta.get("series_uid")
        series = [s for s in find_series(source) if s.modality != "SEG" and (uid is None or s.uid == uid)]
        return list(series[0].files) if series else []
    return []


def dicom_seg_problem(meta: dict[str, Any]) -> str | None:
    """Why no SEG can reference the scan that ``meta`` describes, or None when one can.

    Cheap (one header): for deciding before a long run whether a SEG will be written.
    """
    files = dicom_source_files(meta)
    if not files:
        return f"it was not read from DICOM (format {meta.get('format', 'unknown')})"
    import pydicom  # here: half a second of imports that a NIfTI input never needs

    try:
        header = pydicom.dcmread(files[0], stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds
        return f"its DICOM file {files[0]} cannot be read again ({exc})"
    if "FrameOfReferenceUID" not in header:
        return "its DICOM headers have no FrameOfReferenceUID, which a SEG must share with its source"
    return None


# ---------------------------------------------------------------- writing


def write_dicom_seg(
    path: str | Path,
    labels: np.ndarray,
    source: Volume,
    *,
    class_names: Sequence[str],
    class_colors: Sequence[Sequence[float]],
    label_values: Sequence[int] | None = None,
    source_files: Sequence[str | Path] | None = None,
    algorithm: tuple[str, str] | None = None,
    series_description: str = "Segmentation",
) -> Path:
    """Write ``labels`` as a BINARY DICOM SEG referencing the source series.

    Args:
        path: the .dcm file to write.
        labels: (z, y, x) class indices 0..K-1 on ``source``'s grid (uint8/uint16).
        source: the scan, read from DICOM (its geometry places the frames).
        class_names: K names, background first (not written as a segment).
        class_colors: K RGBA (or RGB) colours, floats in [0, 1].
        label_values: K values a label file of these classes uses (recorded per segment).
        source_files: the source DICOM files; default from ``source.meta``.
        algorithm: (name, version) of the model; None for a manual segmentation.
        series_description: the SEG series' description.

    Returns:
        ``path``.

    Raises:
        ValueError: labels that do not fit the grid or the classes (value named).
        VolumeWriteError: no DICOM source, or the source headers cannot be referenced.
    """
    import highdicom as hd

    path = Path(path)
    labels = _checked_labels(labels, source, len(class_names))
    headers = _source_headers(path, source_files if source_files is not None else dicom_source_files(source.meta))
    descriptions = _descriptions(class_names, class_colors, label_values, algorithm)
    pixels = hd.Volume(labels, hd_affine(source.geometry), coordinate_system="PATIENT",
                       frame_of_reference_uid=headers[0].get("FrameOfReferenceUID"))  # fmt: skip
    name = algorithm[0] if algorithm is not None else "manual"
    try:
        seg = hd.seg.Segmentation(
            source_images=headers, pixel_array=pixels, segmentation_type="BINARY",
            segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=900,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="napari-medseg",
            manufacturer_model_name=name[:64] or "napari-medseg", software_versions=_package_version(),
            device_serial_number="0", content_label="MEDSEG", content_description=series_description[:64],
            series_description=series_description[:64],
        )  # fmt: skip
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise VolumeWriteError(path, f"the DICOM SEG could not be built from the source headers: {exc}") from exc
    seg.save_as(path)
    return path


def _checked_labels(labels: np.ndarray, source: Volume, n_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != source.shape:
        raise ValueError(f"labels of shape {labels.shape} do not match the scan's grid {source.shape}")
    if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != bool:
        raise ValueError(f"labels must hold class indices (integers), not {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        bad = labels[(labels < 0) | (labels >= n_classes)].flat[0]
        raise ValueError(f"label {bad} names no class of {n_classes} (class indices 0..{n_classes - 1} expected)")
    return labels.astype(np.uint8 if n_classes <= 256 else np.uint16, copy=False)


def _source_headers(path: Path, files: Sequence[str | Path]) -> list:
    """The source headers without pixels (highdicom references and copies from them)."""
    import pydicom

    if not files:
        raise VolumeWriteError(path, "a DICOM SEG needs a scan read from DICOM; this scan came from another format")
    headers = []
    for name in files:
        try:
            headers.append(pydicom.dcmread(name, stop_before_pixels=True))
        except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds
            raise VolumeWriteError(path, f"source DICOM file {name} could not be read again: {exc}") from exc
    return headers


def _descriptions(class_names, class_colors, label_values, algorithm) -> list:
    """One SegmentDescription per class after background."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from .seg_codes import segment_codes

    if len(class_colors) != len(class_names) or (label_values is not None and len(label_values) != len(class_names)):
        raise ValueError(f"class_colors and label_values need one entry per class ({len(class_names)})")
    identification = None
    if algorithm is not None:
        identification = hd.AlgorithmIdentificationSequence(
            name=algorithm[0][:64] or "model", family=codes.cid7162.ArtificialIntelligence, version=algorithm[1] or "unknown"
        )
    items = []
    for number in range(1, len(class_names)):
        coded = segment_codes(class_names[number])
        item = hd.seg.SegmentDescription(
            segment_number=number, segment_label=class_names[number][:64],
            segmented_property_category=coded.category, segmented_property_type=coded.type,
            algorithm_type="AUTOMATIC" if algorithm is not None else "MANUAL",
            algorithm_identification=identification, display_color=_cielab(class_colors[number]),
        )  # fmt: skip
        if coded.modifier is not None:
            item.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                hd.sr.CodedConcept.from_code(coded.modifier)
            ]
        if label_values is not None:
            item.SegmentDescription = f"label value {int(label_values[number])}"
        items.append(item)
    return items


def _cielab(color: Sequence[float]):
    import highdicom as hd

    rgb = [min(255.0, max(0.0, float(c) * 255.0)) for c in list(color)[:3]]
    return hd.color.CIELabColor.from_rgb(*rgb)




def _package_version() -> str:
    from .. import __version__

    return __version__
