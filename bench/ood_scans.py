"""The real scans the OOD decision is checked on: brain MRIs that must not be flagged and
CTs that must be, as volumes (used by ``bench/calibrate_ood.py`` and the tests).

MRIs (``shared/data`` of the checkout's parent, skipped when missing; the sample volume
always): the dev subject (skull-stripped T1, oblique), the shipped MNI template sample,
the full-head avg152 template, the full-head MPRAGE DICOM series and the sample head.

CTs, all real, in Hounsfield units, from the pydicom and pydicom-data wheels: a head CT
with skull and a haemorrhage (``693_UNCR.dcm``), a brain-masked enhanced head CT (2
frames, ``eCT_Supplemental.dcm``), an abdominal CT (``explicit_VR-UN.dcm``) and a neck
CT (``CT_small.dcm``). Each is one or two slices: :func:`ct_slab` stacks each slice
repeatedly into a slab of 1 mm slices (:data:`SLAB_MM` thick), so a volume model sees real
CT values and anatomy in every slice and nothing made up.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
#: Thickness (mm) of the slab built from each CT.
SLAB_MM = 40

MR_SCANS = {
    "dev_subject": ("shared", "dev-subject/t1.nii.gz"),
    "mni_sample": ("sample", ""),
    "full_head_template": ("shared", "full-head-template/t1.nii.gz"),
    "full_head_mprage": ("shared", "full-head-mprage"),
    "sample_head": ("shared", "sample-head/t1.nii.gz"),
}
CT_SCANS = {
    "head_ct": ("pydicom-data", "693_UNCR.dcm"),
    "masked_head_ct": ("pydicom-data", "eCT_Supplemental.dcm"),
    "abdomen_ct": ("pydicom-data", "explicit_VR-UN.dcm"),
    "neck_ct": ("pydicom", "CT_small.dcm"),
}


def _wheel_folder(source: str) -> Path:
    if source == "pydicom-data":
        return Path(metadata.distribution("pydicom-data").locate_file("data_store/data"))
    import pydicom

    return Path(pydicom.__file__).parent / "data" / "test_files"


def ct_path(name: str) -> Path:
    """The file of the CT called ``name`` in :data:`CT_SCANS`."""
    source, file = CT_SCANS[name]
    return _wheel_folder(source) / file


def ct_slab(volume, thickness_mm: float = SLAB_MM):
    """A (z, y, x) CT volume of few slices -> each slice repeated into 1 mm slices, the
    whole slab at least ``thickness_mm`` thick; in-plane geometry and the modality kept."""
    from napari_medseg.types import Geometry, Volume

    repeat = max(1, math.ceil(thickness_mm / volume.shape[0]))
    array = np.repeat(volume.array, repeat, axis=0)
    geometry = Geometry((1.0, *volume.spacing[1:]), volume.geometry.origin, volume.geometry.direction)
    return Volume(array, geometry, modality=volume.modality, meta=dict(volume.meta))


def ct_volume(name: str, *, keep_modality: bool = True):
    """The real CT ``name`` as a slab (:func:`ct_slab`); with ``keep_modality`` False its
    stated modality is dropped, as when a CT reaches the model as NIfTI."""
    from napari_medseg.io import read_volume
    from napari_medseg.types import Volume

    slab = ct_slab(read_volume(ct_path(name)))
    if keep_modality:
        return slab
    return Volume(slab.array, slab.geometry, modality="unknown", meta={})


def mr_volumes(names=None) -> Iterator[tuple[str, object]]:
    """(name, Volume) of each MR in :data:`MR_SCANS` that is present (all by default)."""
    from napari_medseg.io import read_volume
    from napari_medseg.resources import sample_volume_path

    for name in names or MR_SCANS:
        where, relative = MR_SCANS[name]
        path = sample_volume_path() if where == "sample" else SHARED / relative
        if Path(path).exists():
            yield name, read_volume(path)


def ct_volumes(names=None, *, keep_modality: bool = True) -> Iterator[tuple[str, object]]:
    """(name, Volume) of each CT in :data:`CT_SCANS` (all by default)."""
    for name in names or CT_SCANS:
        yield name, ct_volume(name, keep_modality=keep_modality)
