"""The manifest of a finished case: what went in, with which model and options, what came out.

``OUTDIR/<case id>/medseg-case.json`` is written last, after the case's result set was
moved in; its presence marks the case finished. It records the input files (size,
modification time, SHA-256), the model (name, path, weights SHA-256), the options, every
output file (size, modification time, SHA-256) and the case's row of the cohort table.

A re-run compares a case with its manifest (:func:`case_state`). Sizes and modification
times are compared first and a file is hashed only when they differ, so checking a
finished cohort reads no image data; a file that was truncated or rewritten is found.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from .inputs import Case

__all__ = ["MANIFEST_NAME", "THUMBNAIL_NAME", "case_state", "read_manifest", "write_manifest"]

MANIFEST_NAME = "medseg-case.json"
THUMBNAIL_NAME = "medseg-qc.png"
FORMAT = 1
# What case_state finds; only "finished" cases are skipped.
FINISHED, MISSING, DAMAGED, CHANGED = "finished", "missing", "damaged", "changed"


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_record(path: str | os.PathLike) -> dict[str, Any]:
    """Size, modification time (ns) and SHA-256 of one file."""
    stat = os.stat(path)
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": file_sha256(path)}


def inputs_digest(records: Mapping[str, Mapping[str, Any]]) -> str:
    """One SHA-256 over the input files' names and hashes (order-independent)."""
    digest = hashlib.sha256()
    for name in sorted(records):
        digest.update(f"{Path(name).name}\0{records[name]['sha256']}\n".encode())
    return digest.hexdigest()


def build_manifest(
    case: Case,
    case_dir: Path,
    *,
    model: Mapping[str, Any],
    options: Mapping[str, Any],
    outputs: Sequence[str],
    row: Mapping[str, Any],
) -> dict[str, Any]:
    """The manifest of ``case`` whose ``outputs`` (file names in ``case_dir``) were written."""
    inputs = {name: file_record(name) for name in case.files}
    return {
        "format": FORMAT,
        "case_id": case.case_id,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "input": {"path": case.path, "series_uid": case.series_uid},
        "inputs": inputs,
        "inputs_sha256": inputs_digest(inputs),
        "model": _json_round_trip(model),
        "options": _json_round_trip(options),
        "outputs": {name: file_record(case_dir / name) for name in outputs},
        "row": dict(row),
    }


def write_manifest(case_dir: Path, manifest: Mapping[str, Any]) -> Path:
    """Write the manifest atomically (it marks the case finished)."""
    from ..export.report import write_json

    return write_json(case_dir / MANIFEST_NAME, dict(manifest))


def read_manifest(case_dir: Path) -> dict[str, Any] | None:
    """The case's manifest, or None when there is none or it cannot be read."""
    try:
        data = json.loads((case_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def remove_manifest(case_dir: Path) -> None:
    """Unmark a case before it is (re)done, so a crash meanwhile leaves it unfinished."""
    (case_dir / MANIFEST_NAME).unlink(missing_ok=True)


def case_state(case: Case, case_dir: Path, *, model: Mapping[str, Any], options: Mapping[str, Any]) -> tuple[str, dict | None]:
    """Compare a case with its manifest.

    Returns:
        (state, manifest): ``"finished"`` (skip it), ``"missing"`` (no manifest: never
        finished or half-written), ``"damaged"`` (an output is missing or changed: redo it),
        or ``"changed"`` (other model, options or input files: results would be replaced).
        Input files found at another path with the same names and content count as the same.
    """
    manifest = read_manifest(case_dir)
    if manifest is None:
        return MISSING, None
    if manifest.get("model") != _json_round_trip(model) or manifest.get("options") != _json_round_trip(options):
        return CHANGED, manifest
    if not _same_inputs(case, manifest):
        return CHANGED, manifest
    outputs = manifest.get("outputs", {})
    if not outputs or not all(_unchanged(case_dir / name, record) for name, record in outputs.items()):
        return DAMAGED, manifest
    return FINISHED, manifest


def difference(manifest: Mapping[str, Any], *, model: Mapping[str, Any], options: Mapping[str, Any]) -> str:
    """What differs between a manifest and this run, in words (for refusals)."""
    if manifest.get("model") != _json_round_trip(model):
        return f"model {manifest.get('model', {}).get('name')!r} (weights {str(manifest.get('model', {}).get('weights_sha256'))[:12]})"
    old = manifest.get("options", {})
    new = _json_round_trip(options)
    changed = sorted(key for key in {*old, *new} if old.get(key) != new.get(key))
    if changed:
        return "options " + ", ".join(f"{key}={old.get(key)!r}" for key in changed)
    return "input files that have changed since"


def _same_inputs(case: Case, manifest: Mapping[str, Any]) -> bool:
    """The recorded input files, unchanged; or, when the cohort's files moved, the same
    content (names and hashes) at their new place."""
    recorded = manifest.get("inputs", {})
    if set(recorded) == set(case.files):
        return all(_unchanged(Path(name), recorded[name]) for name in case.files)
    try:
        moved = {name: {"sha256": file_sha256(name)} for name in case.files}
    except OSError:
        return False
    return inputs_digest(moved) == manifest.get("inputs_sha256")


def _unchanged(path: Path, record: Mapping[str, Any]) -> bool:
    """Same size and time: unchanged; same size, other time: compare the hash."""
    try:
        stat = path.stat()
    except OSError:
        return False
    if stat.st_size != record.get("size"):
        return False
    if stat.st_mtime_ns == record.get("mtime_ns"):
        return True
    return file_sha256(path) == record.get("sha256")


def _json_round_trip(options: Mapping[str, Any]) -> dict[str, Any]:
    """Options as they read back from JSON (tuples become lists)."""
    return json.loads(json.dumps(dict(options)))
