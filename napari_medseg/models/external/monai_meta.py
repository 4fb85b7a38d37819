"""Class names and modality from a MONAI bundle's ``configs/metadata.json`` (plain data)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

__all__ = ["class_names_of", "modality_of"]

logger = logging.getLogger(__name__)

_MODALITIES = {"CT": "CT", "MR": "MR", "MRI": "MR", "PT": "PT", "PET": "PT", "US": "US"}


def _section(metadata: Mapping[str, Any], part: str, key: str) -> Mapping[str, Any]:
    """``network_data_format.<part>.<key>`` (or the only entry of ``<part>``), else {}."""
    entries = (metadata.get("network_data_format") or {}).get(part) if isinstance(metadata, Mapping) else None
    if not isinstance(entries, Mapping):
        return {}
    entry = entries.get(key) if key in entries else (next(iter(entries.values())) if len(entries) == 1 else None)
    return entry if isinstance(entry, Mapping) else {}


def class_names_of(metadata: Mapping[str, Any], outputs: int) -> tuple[str, ...]:
    """One name per output channel: ``outputs.pred.channel_def`` ("0" .. "K-1"), else
    ``background, class_1, ..., class_{K-1}`` (also when the names do not fit the network)."""
    channel_def = _section(metadata, "outputs", "pred").get("channel_def")
    fallback = ("background", *(f"class_{i}" for i in range(1, outputs)))
    if not isinstance(channel_def, Mapping):
        return fallback
    names = tuple(channel_def.get(str(i)) for i in range(outputs))
    if len(channel_def) != outputs or not all(isinstance(n, str) and n.strip() for n in names) or len(set(names)) != outputs:
        logger.warning("metadata channel_def %r does not name %d distinct classes; using %s", channel_def, outputs, fallback)
        return fallback
    return tuple(n.strip() for n in names)


def modality_of(metadata: Mapping[str, Any], image_key: str) -> str:
    """The DICOM-style modality of ``inputs.<image_key>.modality`` ("OT" when not given)."""
    modality = _section(metadata, "inputs", image_key).get("modality")
    return _MODALITIES.get(modality.strip().upper(), "OT") if isinstance(modality, str) else "OT"
