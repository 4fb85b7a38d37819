"""A Dask worker preload for the cohort tests: cases whose id starts with ``crash_exit`` or
``crash_segv`` end their worker process from inside the task, as a crash or the kernel's
out-of-memory killer would (``os._exit``; a segmentation fault in native code).

Loaded by path through ``distributed.worker.preload``: every worker process runs it at
start, a replacement of a dead one included. Only ``run_case`` is wrapped; everything
around it (the model cache, the start records, Dask's rescheduling) is the real thing.
"""

from __future__ import annotations

import ctypes
import os


def dask_setup(worker) -> None:  # noqa: ARG001 - the preload hook's signature
    from napari_medseg.batch import case

    real_run_case = case.run_case

    def run_case(this_case, *args, **kwargs):
        if this_case.case_id.startswith("crash_exit"):
            os._exit(70)
        if this_case.case_id.startswith("crash_segv"):
            ctypes.string_at(0)  # reads address 0: SIGSEGV
        return real_run_case(this_case, *args, **kwargs)

    case.run_case = run_case
