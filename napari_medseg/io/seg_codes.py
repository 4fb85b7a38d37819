"""Coded segment properties (DICOM SEG) for class names: SNOMED CT where a code exists.

A class name is matched whole, case-insensitively, after a leading "left "/"right " is
taken off (that becomes a laterality modifier); names such as "left cerebral cortex" or
"3rd ventricle" (FreeSurfer's structure names) are listed as aliases. A name with no
entry gets the generic category and type "Tissue"; its segment label still carries the
name. Codes come from pydicom's coded concepts, never typed as numbers here.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.sr.coding import Code

__all__ = ["SegmentCodes", "segment_codes"]


@dataclass(frozen=True)
class SegmentCodes:
    """Category, type and optional laterality modifier of one segment."""

    category: Code
    type: Code
    modifier: Code | None = None


# (aliases, category keyword, type keyword); keywords of pydicom's ``codes.SCT``
_TABLE: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("csf", "cerebrospinal fluid"), "Tissue", "CerebrospinalFluid"),
    (("grey matter", "gray matter"), "Tissue", "GrayMatter"),
    (("white matter",), "Tissue", "WhiteMatter"),
    (("cerebral white matter",), "AnatomicalStructure", "CerebralWhiteMatter"),
    (("cerebral cortex", "cortex"), "AnatomicalStructure", "CerebralCortex"),
    (("cerebellum white matter", "cerebellar white matter"), "AnatomicalStructure", "CerebellarWhiteMatter"),
    (("cerebellum cortex", "cerebellar cortex"), "AnatomicalStructure", "CerebellarCortex"),
    (("cerebellum",), "AnatomicalStructure", "Cerebellum"),
    (("lateral ventricle",), "AnatomicalStructure", "LateralVentricle"),
    (("inferior lateral ventricle",), "AnatomicalStructure", "InferiorHornOfLateralVentricle"),
    (("3rd ventricle", "third ventricle"), "AnatomicalStructure", "ThirdVentricle"),
    (("4th ventricle", "fourth ventricle"), "AnatomicalStructure", "FourthVentricle"),
    (("thalamus", "thalamus proper"), "AnatomicalStructure", "Thalamus"),
    (("caudate", "caudate nucleus"), "AnatomicalStructure", "CaudateNucleus"),
    (("putamen",), "AnatomicalStructure", "Putamen"),
    (("pallidum", "globus pallidus"), "AnatomicalStructure", "GlobusPallidus"),
    (("hippocampus",), "AnatomicalStructure", "Hippocampus"),
    (("amygdala",), "AnatomicalStructure", "Amygdala"),
    (("accumbens", "accumbens area", "nucleus accumbens"), "AnatomicalStructure", "NucleusAccumbens"),
    (("brain stem", "brainstem"), "AnatomicalStructure", "BrainStem"),
    (("brain",), "AnatomicalStructure", "Brain"),
)
_GENERIC = ("Tissue", "Tissue")
_SIDES = {"left": "Left", "right": "Right"}


def segment_codes(class_name: str) -> SegmentCodes:
    """The coded category, type and laterality of a class, e.g. "left putamen" ->
    (Anatomical Structure, Putamen, Left); generic "Tissue" for names not listed."""
    from pydicom.sr.codedict import codes

    name = " ".join(class_name.lower().replace("_", " ").replace("-", " ").split())
    modifier = None
    side, _, rest = name.partition(" ")
    if side in _SIDES and rest:
        modifier, name = getattr(codes.SCT, _SIDES[side]), rest
    category, kind = _lookup(name)
    if (category, kind) == _GENERIC:
        modifier = None  # "left something unknown": the label says it all
    return SegmentCodes(getattr(codes.SCT, category), getattr(codes.SCT, kind), modifier)


def _lookup(name: str) -> tuple[str, str]:
    for aliases, category, kind in _TABLE:
        if name in aliases:
            return category, kind
    return _GENERIC
