"""Cohorts on Dask: many scans segmented as ``medseg segment`` would, resumable, failures recorded.

Modules, one job each: :mod:`.inputs` (which cases), :mod:`.plan` (model and options),
:mod:`.manifest` (a finished case's record), :mod:`.case` (one case), :mod:`.worker` (the
per-process model cache and the task), :mod:`.cluster` (where it runs), :mod:`.run`
(:func:`run_cohort`), :mod:`.table` (``cohort.csv``), :mod:`.qc` (``qc.html``),
:mod:`.review` (a case's files as layers). Needs ``distributed`` (the ``cohort`` extra).

Example:
    >>> from napari_medseg.batch import run_cohort
    >>> table = run_cohort(["scans/"], "cohort-out", model="brain-tissue-unet")
    >>> table[table.status == "failed"][["case_id", "error"]]
"""

from __future__ import annotations

from typing import Any

__all__ = ["discover_cases", "read_table", "run_cohort"]

_LAZY = {"discover_cases": ".inputs", "read_table": ".table", "run_cohort": ".run"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
