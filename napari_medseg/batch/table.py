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

__all__ = [
    "CSV_NAME", "PARQUET_NAME", "failed_row", "is_missing", "pending_row", "read_table", "row_from_report", "typed",
    "write_atomically", "write_table",
]  # fmt: skip

logger = logging.getLogger(__name__)

CSV_NAME = "cohort.csv"
PARQUET_NAME = "cohort.parquet"
FIRST_COLUMNS = ["case_id", "status", "error", "flagged", "flags", "ood_score", "ood_flag", "fg_epistemic_nats"]
LAST_COLUMNS = ["seconds", "network_s", "device", "worker", "input", "series_uid", "folder", "resumed"]
# Column types (volumes, ``vol_*``, are numbers too), kept in both files: see :func:`typed`.
FLOAT_COLUMNS = ("ood_score", "fg_epistemic_nats", "seconds", "network_s")
BOOL_COLUMNS = ("flagged", "resumed")
NULLABLE_BOOL_COLUMNS = ("ood_flag",)
TEXT_COLUMNS = ("case_id", "status", "error", "flags", "device", "worker", "input", "series_uid", "folder")


def volume_column(class_name: str) -> str:
    """The column of a class's volume: ``vol_<class>_ml`` (class name as in file names)."""
    from ..export.run import safe_name

    return f"vol_{safe_name(class_name)}_ml"


def row_from_report(case: Case, report: Mapping[str, Any], *, seconds: float, worker: str) -> dict[str, Any]:
    """A finished case's row, from its ``<stem>_report.json``."""
    ood = report.get("ood") or {}
    flags = []
    if ood.get("flag"):
        flags.append("out of distribution" + (f" ({', '.join(ood['flagged_by'])})" if ood.get("flagged_by") else ""))
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
    """Rows -> a pandas DataFrame sorted by case id, columns in a fixed order and typed
    (:func:`typed`)."""
    import pandas as pd

    table = pd.DataFrame(list(rows))
    if table.empty:
        return typed(pd.DataFrame(columns=FIRST_COLUMNS + LAST_COLUMNS))
    volumes = sorted(c for c in table.columns if c.startswith("vol_"))
    known = FIRST_COLUMNS + volumes + LAST_COLUMNS
    columns = [c for c in known if c in table.columns] + [c for c in table.columns if c not in known]
    return typed(table[columns].sort_values("case_id", kind="stable").reset_index(drop=True))


def typed(table):
    """The table's known columns as their types, whatever the rows held (a column of a
    cohort without uncertainty is all empty; an empty column reads back from CSV as numbers):
    numbers as float64 (empty: NaN), ``flagged`` and ``resumed`` as bool, ``ood_flag`` as
    pandas' nullable boolean (empty for failed and pending cases), text columns as strings
    (empty: ""). Other columns are left as they are. Returns a new DataFrame.

    Raises:
        ValueError: a value that is not of its column's type (column and value named).
    """
    import pandas as pd

    table = table.copy()
    for column in table.columns:
        try:
            if column in FLOAT_COLUMNS or column.startswith("vol_"):
                table[column] = pd.to_numeric(table[column]).astype("float64")
            elif column in BOOL_COLUMNS:
                table[column] = table[column].map(lambda value: bool(_truth(value))).astype(bool)
            elif column in NULLABLE_BOOL_COLUMNS:
                table[column] = table[column].map(_truth).astype("boolean")
            elif column in TEXT_COLUMNS:
                table[column] = table[column].map(lambda value: "" if is_missing(value) else str(value)).astype(str)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"column {column!r}: {exc}") from None
    return table


def is_missing(value: Any) -> bool:
    """None, NaN or pandas' NA (an empty cell)."""
    import pandas as pd

    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _truth(value: Any) -> bool | None:
    """True/False from a bool or its text ("True", "false", "1"); None when empty."""
    if is_missing(value) or value == "":
        return None
    if isinstance(value, str):
        if value.strip().lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{value!r} is not a truth value (True or False)")
        return value.strip().lower() in ("true", "1")
    return bool(value)


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
    """A cohort table from ``cohort.csv``, ``cohort.parquet`` or a cohort folder (its CSV),
    with the column types of :func:`typed`.

    Raises:
        FileNotFoundError: no cohort table there (named).
        ValueError: the file has no ``case_id`` column (not a cohort table), or a column
            holds a value of the wrong type (named with the file).
    """
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        path = path / CSV_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no cohort table ({CSV_NAME} or {PARQUET_NAME}) there")
    if path.suffix == ".parquet":
        table = pd.read_parquet(path)
    else:
        table = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={c: str for c in TEXT_COLUMNS})
    if "case_id" not in table.columns:
        raise ValueError(f"{path}: not a cohort table (no case_id column; columns {list(table.columns)})")
    try:
        return typed(table)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def write_atomically(path: Path, writer) -> Path:
    """Write through a temporary file in the same folder and rename it into place."""
    temporary = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.part"
    try:
        writer(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
