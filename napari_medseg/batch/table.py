"""The cohort table: one row per case, written as ``cohort.csv`` (and ``cohort.parquet``).

Columns: ``case_id``, ``status`` ("done", "failed" or "pending"), ``error``, ``flagged`` and
``flags`` (why: failed, out of distribution, volumes outside the training range, model
warnings), ``ood_score`` and ``ood_flag``, ``fg_epistemic_nats`` (mean mutual information
inside the predicted foreground, with ``--uncertainty``), ``vol_<class>_ml`` per class,
``seconds`` (whole case), ``network_s``, ``device``, ``worker``, ``input``, ``series_uid``,
``folder`` (relative to the cohort folder) and ``resumed`` (finished by an earlier run).
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

from .inputs import Case

__all__ = ["CSV_NAME", "PARQUET_NAME", "failed_row", "pending_row", "read_table", "row_from_report", "write_atomically", "write_table"]

logger = logging.getLogger(__name__)

CSV_NAME = "cohort.csv"
PARQUET_NAME = "cohort.parquet"
FIRST_COLUMNS = ["case_id", "status", "error", "flagged", "flags", "ood_score", "ood_flag", "fg_epistemic_nats"]
LAST_COLUMNS = ["seconds", "network_s", "device", "worker", "input", "series_uid", "folder", "resumed"]


def volume_column(class_name: str) -> str:
    """The column of a class's volume: ``vol_<class>_ml`` (class name as in file names)."""
    from ..pipeline import safe_name

    return f"vol_{safe_name(class_name)}_ml"


def row_from_report(case: Case, report: Mapping[str, Any], *, seconds: float, worker: str) -> dict[str, Any]:
    """A finished case's row, from its ``<stem>_report.json``."""
    ood = report.get("ood") or {}
    flags = []
    if ood.get("flag"):
        flags.append("out of distribution")
    if report.get("volumes_outside_training_range"):
        flags.append("volume outside training range: " + ", ".join(report["volumes_outside_training_range"]))
    flags.extend(report.get("model_warnings") or [])
    row = _base_row(case, "done")
    row.update(
        flagged=bool(flags),
        flags="; ".join(flags),
        ood_score=ood.get("score"),
        ood_flag=ood.get("flag"),
        fg_epistemic_nats=ood.get("foreground_epistemic"),
        seconds=round(seconds, 3),
        network_s=(report.get("timings_s") or {}).get("network"),
        device=report.get("device", ""),
        worker=worker,
    )
    row.update({volume_column(name): ml for name, ml in (report.get("volume_ml") or {}).items()})
    return row


def failed_row(case: Case, error: BaseException | str, *, worker: str = "") -> dict[str, Any]:
    """A case that failed after its retries, with the error (type and message)."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    row = _base_row(case, "failed")
    row.update(error=text, flagged=True, flags="failed", worker=worker)
    return row


def pending_row(case: Case) -> dict[str, Any]:
    """A case the run stopped before (Ctrl-C): it runs next time."""
    return _base_row(case, "pending")


def _base_row(case: Case, status: str) -> dict[str, Any]:
    return {
        "case_id": case.case_id,
        "status": status,
        "error": "",
        "flagged": False,
        "flags": "",
        "input": case.path,
        "series_uid": case.series_uid or "",
        "folder": case.case_id,
        "resumed": False,
    }


def make_table(rows: Sequence[Mapping[str, Any]]):
    """Rows -> a pandas DataFrame sorted by case id, columns in a fixed order."""
    import pandas as pd

    table = pd.DataFrame(list(rows))
    if table.empty:
        return pd.DataFrame(columns=FIRST_COLUMNS + LAST_COLUMNS)
    volumes = sorted(c for c in table.columns if c.startswith("vol_"))
    known = FIRST_COLUMNS + volumes + LAST_COLUMNS
    columns = [c for c in known if c in table.columns] + [c for c in table.columns if c not in known]
    return table[columns].sort_values("case_id", kind="stable").reset_index(drop=True)


def write_table(table, out: Path) -> dict[str, Path]:
    """Write ``cohort.csv`` (always) and ``cohort.parquet`` (when pyarrow is importable),
    each atomically; returns "csv" (and "parquet") -> path."""
    written = {"csv": write_atomically(out / CSV_NAME, lambda path: table.to_csv(path, index=False))}
    try:
        import pyarrow  # noqa: F401 - only to know whether Parquet can be written
    except ImportError:
        logger.info("%s not written: Parquet needs pyarrow (pip install pyarrow)", out / PARQUET_NAME)
        return written
    written["parquet"] = write_atomically(out / PARQUET_NAME, lambda path: table.to_parquet(path, index=False))
    return written


def read_table(path: str | os.PathLike):
    """A cohort table from ``cohort.csv`` (or a cohort folder holding one).

    Raises:
        FileNotFoundError: no cohort table there (named).
        ValueError: the file has no ``case_id`` column (not a cohort table).
    """
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        path = path / CSV_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no cohort table (cohort.csv) there")
    table = pd.read_csv(path, keep_default_na=False, na_values=[""])
    if "case_id" not in table.columns:
        raise ValueError(f"{path}: not a cohort table (no case_id column; columns {list(table.columns)})")
    return table


def write_atomically(path: Path, writer) -> Path:
    """Write through a temporary file in the same folder and rename it into place."""
    temporary = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.part"
    try:
        writer(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
