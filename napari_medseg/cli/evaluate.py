"""``medseg evaluate PRED REF``: Dice, HD95 and volume difference per class, as JSON."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import uuid
from pathlib import Path
from typing import Any

from ..types import GRID_TOLERANCE

import numpy as np

log = logging.getLogger(__name__)

#: Largest difference (mm for spacing and origin, unitless for direction) between grids that match.
#: Label values up to this are compared in one dense table; above it only the values present.
MAX_DENSE_LABEL = 1024


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="compare a predicted label map with a reference: Dice, HD95, volumes (JSON)",
        description=(
            "Compare two label maps on the same grid. Prints JSON with, per class, Dice, HD95 "
            "(mm, 95th percentile of the pooled symmetric surface distances), predicted and "
            "reference volumes and their difference (mL), and the mean Dice. null means "
            "undefined: the class is absent from both maps (Dice, HD95) or from one of "
            "them (HD95); present_pred and present_ref tell which."
        ),
    )
    parser.add_argument("pred", help="predicted label map (NIfTI/NRRD/MHA file or DICOM folder)")
    parser.add_argument("ref", help="reference label map on the same grid")
    parser.add_argument(
        "--classes",
        nargs="+",
        metavar="NAME",
        help="names of labels 1, 2, ... in order (background 0 is implicit); "
        "default class_1 .. class_K up to the largest label in either map",
    )
    parser.add_argument("--output", "-o", metavar="FILE.json", help="also write the JSON to this file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..io import read_volume
    from ..quantify import as_labels, evaluate

    output = Path(args.output) if args.output else None
    if output is not None and not output.parent.is_dir():
        raise FileNotFoundError(f"folder {output.parent} for --output {output} does not exist")
    pred = read_volume(args.pred, keep_channels=True)
    ref = read_volume(args.ref, keep_channels=True)
    for role, path, volume in (("PRED", args.pred, pred), ("REF", args.ref, ref)):
        if volume.array.ndim != 3:
            raise ValueError(f"{role} {path} has shape {volume.array.shape}; a label map must be (z, y, x)")
        for warning in volume.warnings:
            log.warning("%s %s: %s", role, path, warning)
    check_same_grid(pred, ref, args.pred, args.ref)
    pred_labels = as_labels(pred.array, name=f"PRED {args.pred}")
    ref_labels = as_labels(ref.array, name=f"REF {args.ref}")
    max_label = max(int(pred_labels.max()), int(ref_labels.max()))
    holder = args.pred if int(pred_labels.max()) == max_label else args.ref
    if max_label > MAX_DENSE_LABEL:
        result = evaluate_present_values(pred_labels, ref_labels, pred.geometry, args.classes, max_label, holder)
    else:
        class_names = ("background", *_foreground_names(args.classes, max_label, holder))
        result = evaluate(pred_labels, ref_labels, pred.geometry, class_names)
    report = {
        "pred": str(args.pred),
        "ref": str(args.ref),
        "shape_zyx": list(pred.shape),
        "spacing_mm_zyx": list(pred.geometry.spacing),
        **result,
    }
    text = json.dumps(json_safe(report), indent=2, allow_nan=False)
    if output is not None:
        write_text_atomic(output, text + "\n")
    print(text)
    return 0


def evaluate_present_values(pred, ref, geometry, names: list[str] | None, max_label: int, holder) -> dict[str, Any]:
    """:func:`~napari_medseg.quantify.evaluate` over the label values present in either map.

    Every label 1..max would need a (max + 1)^2 table of counts (one voxel valued 65535:
    32 GiB); the values present are renumbered 1..N instead, and each row keeps its
    value as ``index``. Classes absent from both maps are not listed.
    """
    from ..quantify import evaluate

    if names is not None:
        _foreground_names(names, max_label, holder)  # the user's names are checked as for dense labels
    values = np.union1d(np.union1d(np.unique(pred), np.unique(ref)), [0])
    log.warning("%s holds label value %d: only the %d values present in either map are compared", holder, max_label,
                len(values) - 1)  # fmt: skip
    compact = np.uint16 if len(values) <= 65536 else np.int32
    result = evaluate(
        np.searchsorted(values, pred).astype(compact), np.searchsorted(values, ref).astype(compact), geometry,
        ("background", *(names[int(v) - 1] if names else f"class_{int(v)}" for v in values[1:])),
    )  # fmt: skip
    for row in result["classes"].values():
        row["index"] = int(values[row["index"]])
    return result


def _foreground_names(names: list[str] | None, max_label: int, holder="the label maps") -> list[str]:
    """Names of labels 1..K: the user's (checked against the labels) or class_1..class_K."""
    if names is None:
        return [f"class_{k}" for k in range(1, max(max_label, 1) + 1)]
    if names and names[0].lower() == "background":
        raise ValueError(
            f"--classes {' '.join(names)}: name labels 1, 2, ... only; background (0) is implicit"
        )
    if len(names) < max_label:
        raise ValueError(
            f"{holder} holds values up to {max_label} but --classes names only {len(names)} "
            f"({' '.join(names)})"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"--classes {' '.join(names)}: names must be unique")
    return list(names)


def check_same_grid(pred, ref, pred_path, ref_path, tolerance: float = GRID_TOLERANCE) -> None:
    """Raise ValueError naming both files unless the two volumes share shape and geometry."""
    problems = [] if pred.shape == ref.shape else [f"shape (z, y, x) {pred.shape} vs {ref.shape}"]
    problems += pred.geometry.differences(ref.geometry, tolerance)
    if problems:
        raise ValueError(
            f"PRED {pred_path} and REF {ref_path} are not on the same grid "
            f"(tolerance {tolerance:g}): " + "; ".join(problems) + ". Resample one onto the other first."
        )


def json_safe(value: Any) -> Any:
    """A copy of ``value`` with nan and inf floats turned into None (strict JSON)."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {path.parent} for --output {path} does not exist")
    temporary = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.part"
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
