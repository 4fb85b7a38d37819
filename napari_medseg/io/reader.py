"""Read any supported file or DICOM folder into a :class:`~napari_medseg.types.Volume`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..types import Geometry, Volume
from . import dicom, dicom_seg, itk_headers, nifti, nifti_header, nifti_voxels
from .sitk_images import geometry_from_sitk, image_from_array, quiet_itk
from .errors import VolumeReadError
from .limits import DEFLATE_MAX_RATIO, check_volume_allocation

logger = logging.getLogger(__name__)

_FLOAT_PIXELS = (sitk.sitkFloat32, sitk.sitkFloat64, sitk.sitkVectorFloat32, sitk.sitkVectorFloat64)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
SUPPORTED_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES + tuple(dicom.DICOM_SUFFIXES)
GEOMETRY_KEY = "medseg_geometry"


def volume_stem(path: str | Path) -> str:
    """A file's name without its volume suffixes (.nii.gz, .nrrd, .dcm, ...), or a folder's
    own name (DICOM folders); "volume" when nothing is left."""
    name = Path(path).name
    for suffix in (".gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".dicom", ".ima"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name or "volume"


def file_format(path: str | Path) -> str | None:
    """'nifti', 'itk', 'dicom' or None, from the name (and magic bytes for DICOM)."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(ITK_SUFFIXES):
        return "itk"
    if path.suffix.lower() in dicom.DICOM_SUFFIXES:
        return "dicom"
    if path.is_file() and dicom.looks_like_dicom(path):
        return "dicom"
    return None


def read_volume(path: str | Path, *, series_uid: str | None = None, keep_channels: bool = False) -> Volume:
    """Read a volume with its geometry.

    Args:
        path: a NIfTI/NRRD/MHA/MHD file, a DICOM file (single or multi-frame), a
            DICOM SEG file (segment numbers on its source series' grid, see
            :func:`~napari_medseg.io.dicom_seg.read_dicom_seg`), or a folder holding
            DICOM series (searched recursively; SEG objects in it are not series).
        series_uid: which series of a DICOM folder; default the one with most slices.
        keep_channels: keep vector images as (z, y, x, C); otherwise the first
            component is taken with a warning.

    Returns:
        A Volume with the array in (z, y, x) order and spacing/origin/direction in the
        same order; ``meta["warnings"]`` lists what was fixed while reading.

    Raises:
        VolumeReadError: the path is missing, empty, corrupt, too large or unsupported.
    """
    with quiet_itk():
        return _read_volume(Path(path), series_uid, keep_channels)


def _read_volume(path: Path, series_uid: str | None, keep_channels: bool) -> Volume:
    if not path.exists():
        raise VolumeReadError(path, "no such file or folder")
    notes: list[str] = []
    meta: dict = {"source": str(path)}
    if path.is_dir():
        image, extra = dicom.read_series(path, series_uid)
        meta["format"] = "dicom"
    else:
        if itk_headers.require_regular_file(path).st_size == 0:
            raise VolumeReadError(path, "the file is empty (0 bytes)")
        kind = file_format(path)
        if kind is None:
            raise VolumeReadError(
                path, f"unsupported file type; expected one of {', '.join(SUPPORTED_SUFFIXES)} or a DICOM folder"
            )
        meta["format"] = kind
        if kind == "dicom" and dicom_seg.is_dicom_seg(path):
            return dicom_seg.read_dicom_seg(path)
        if kind == "dicom":
            image, extra = dicom.read_file(path)
        elif kind == "nifti":
            image, extra = _read_nifti_file(path)
        else:
            image, extra = _read_itk_file(path)
    notes.extend(extra.pop("warnings", []))
    non_finite = extra.pop("non_finite", [])
    header = extra.pop("nifti_header", None)
    meta.update(extra)

    image = _to_3d(image, path, notes, keep_channels)
    geometry = geometry_from_sitk(image)
    array = sitk.GetArrayFromImage(image)
    if non_finite:  # SimpleITK turned them into 0; handle them as for every other format
        array = nifti_voxels.restore_non_finite(array, non_finite)
    array = _replace_non_finite(array, notes)

    if meta["format"] == "nifti":
        geometry = _nifti_exact_geometry(header, geometry, meta)
    elif meta["format"] == "itk":
        geometry = _stored_exact_geometry(extra.get("metadata", {}), geometry)
    meta.pop("metadata", None)

    for note in notes:
        logger.warning("%s: %s", path, note)
    meta["warnings"] = notes
    modality = (meta.pop("modality", "") or "unknown").upper() if meta.get("modality") else "unknown"
    return Volume(array=array, geometry=geometry, modality=modality, meta=meta)


def _read_nifti_file(path: Path) -> tuple[sitk.Image, dict]:
    """NIfTI-1 through SimpleITK, NIfTI-2 through our own decoder; header checked first."""
    header = _nifti_header(path)
    problem = nifti_header.header_problem(header)
    if problem:
        raise VolumeReadError(path, f"invalid NIfTI header: {problem}")
    compressed = path.name.lower().endswith(".gz")
    check_volume_allocation(
        path,
        nifti_header.data_shape(header),
        nifti_header.bytes_per_voxel(header),
        bytes_present=path.stat().st_size - (0 if compressed else nifti_header.data_offset(header)),
        max_expansion=DEFLATE_MAX_RATIO if compressed else 1,
    )
    _check_nifti_complete(path, header)
    if header["version"] == 1:
        image, extra = _read_itk_file(path, checked=True)
        found = nifti_voxels.find_non_finite(path, header) if image.GetPixelID() in _FLOAT_PIXELS else []
        return image, {**extra, "nifti_header": header, "non_finite": found}
    try:
        array, notes = nifti_voxels.read_voxels(path, header)
        geometry = nifti_voxels.geometry_from_header(header)
    except ValueError as exc:
        raise VolumeReadError(path, f"the NIfTI-2 file could not be decoded: {exc}") from exc
    return image_from_array(array, geometry), {"nifti_header": header, "warnings": notes}


def _nifti_header(path: Path) -> dict:
    try:
        header = nifti.read_header(path)
    except (OSError, EOFError) as exc:
        raise VolumeReadError(path, f"not a valid NIfTI file ({exc})") from exc
    if header is None:
        raise VolumeReadError(path, "not a valid NIfTI file (no NIfTI-1 or NIfTI-2 header)")
    return header


def _read_itk_file(path: Path, checked: bool = False) -> tuple[sitk.Image, dict]:
    """NRRD and MetaImage (and NIfTI-1 once ``checked``): the header is parsed and its
    data files checked here before SimpleITK opens anything."""
    if not checked:
        declared = _inspect_itk_header(path)
        check_volume_allocation(
            path,
            declared.shape,
            declared.bytes_per_voxel,
            bytes_present=declared.bytes_present,
            max_expansion=declared.max_expansion,
        )
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise VolumeReadError(path, f"not a valid {_format_name(path)} file ({dicom._itk_message(exc)})") from exc
    size = reader.GetSize()
    components = reader.GetNumberOfComponents()
    _check_size(path, size, components, reader.GetPixelID())
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise VolumeReadError(
            path, f"the {_format_name(path)} file is truncated or corrupt ({dicom._itk_message(exc)})"
        ) from exc
    metadata = {key: reader.GetMetaData(key) for key in reader.GetMetaDataKeys()}
    modality = metadata.get("Modality", metadata.get("modality", ""))
    if modality.startswith("MET_MOD_"):
        modality = modality[len("MET_MOD_") :]
    return image, {"metadata": metadata, "modality": modality}


def _inspect_itk_header(path: Path) -> itk_headers.DeclaredData:
    if path.name.lower().endswith((".nrrd", ".nhdr")):
        return itk_headers.inspect_nrrd(path)
    return itk_headers.inspect_metaimage(path)


def _check_nifti_complete(path: Path, header: dict) -> None:
    problem = nifti.check_complete(path, header)
    if problem:
        raise VolumeReadError(path, f"the NIfTI file is truncated or corrupt: {problem}")


def _format_name(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "NIfTI"
    if name.endswith((".nrrd", ".nhdr")):
        return "NRRD"
    return "MetaImage"


def _check_size(path: Path, size: tuple[int, ...], components: int, pixel_id: int) -> None:
    """The size gate again with what SimpleITK understood of the header."""
    check_volume_allocation(path, size, components * _bytes_per_component(pixel_id))


def _bytes_per_component(pixel_id: int) -> int:
    image = sitk.Image([1] * 2, pixel_id)
    return max(1, sitk.GetArrayViewFromImage(image).dtype.itemsize)


def _to_3d(image: sitk.Image, path: Path, notes: list[str], keep_channels: bool) -> sitk.Image:
    dim = image.GetDimension()
    if dim == 2:
        image = sitk.JoinSeries(image)
    elif dim == 4:
        size = list(image.GetSize())
        notes.append(f"4D image with {size[3]} volumes: only the first is read")
        size[3] = 0
        image = sitk.Extract(image, size, [0, 0, 0, 0])
    elif dim != 3:
        raise VolumeReadError(path, f"{dim}D images are not supported")
    components = image.GetNumberOfComponentsPerPixel()
    if components > 1 and not keep_channels:
        kind = "RGB" if components in (3, 4) and "RGB" in image.GetPixelIDTypeAsString().upper() else "vector"
        notes.append(f"{kind} image with {components} components per voxel: only the first is read")
        image = sitk.VectorIndexSelectionCast(image, 0)
    return image


def _replace_non_finite(array: np.ndarray, notes: list[str]) -> np.ndarray:
    if not np.issubdtype(array.dtype, np.floating):
        return array
    finite = np.isfinite(array)
    if finite.all():
        return array
    n_bad = int((~finite).sum())
    if not finite.any():
        notes.append(f"all {array.size} voxels are NaN or infinite: replaced by 0")
        return np.zeros_like(array)
    low, high = array[finite].min(), array[finite].max()
    array = array.copy()
    array[np.isnan(array)] = low
    array[np.isposinf(array)] = high
    array[np.isneginf(array)] = low
    notes.append(f"{n_bad} NaN or infinite voxels replaced by the finite minimum/maximum ({low:g}/{high:g})")
    return array


def _nifti_exact_geometry(header: dict | None, geometry: Geometry, meta: dict) -> Geometry:
    if header is None:
        return geometry
    exact = nifti.exact_geometry(header, geometry)
    if exact is not None:
        geometry = exact
    meta["nifti_fields"] = nifti.geometry_fields(header)
    meta["nifti_fields_geometry"] = geometry
    return geometry


def _stored_exact_geometry(metadata: dict, geometry: Geometry) -> Geometry:
    text = metadata.get(GEOMETRY_KEY)
    if not text:
        return geometry
    try:
        data = json.loads(text)
        stored = Geometry(data["spacing"], data["origin"], data["direction"])
    except (ValueError, KeyError, TypeError):
        return geometry
    return stored if stored.matches(geometry) else geometry
