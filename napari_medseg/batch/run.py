"""``run_cohort``: a cohort of scans segmented on Dask, resumable, failures recorded.

Dask does the scheduling, the retries and the rescheduling of a killed worker's case; this
module decides what is left to do, submits one task per case, collects the rows, and
writes the table and the QC page (also after Ctrl-C, with the cases not reached marked
"pending").
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .attempts import ATTEMPTS_FOLDER, CaseAttempts
from .cluster import ClusterOptions, open_client
from .inputs import Case, discover_cases
from .manifest import CHANGED, FINISHED, THUMBNAIL_NAME, case_state, difference
from .plan import DEFAULT_MODEL, CohortPlan, make_plan
from .progress import CohortProgress
from .table import failed_row, make_table, pending_row, write_table

__all__ = ["COHORT_LOCK", "run_cohort"]

logger = logging.getLogger(__name__)

COHORT_LOCK = ".medseg-cohort.lock"


def run_cohort(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    client: Any = None,
    *,
    model: str = DEFAULT_MODEL,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int | None = None,
    postprocessing: bool = True,
    refine: bool = False,
    uncertainty: str = "none",
    samples: int = 10,
    ensemble: Sequence[str] = (),
    gradcam: Sequence[str | int] = (),
    gradcam_method: str = "gradcam",
    dicom_seg: bool | None = None,
    figure: bool = False,
    overwrite: bool = False,
    retries: int = 1,
    cluster: ClusterOptions | None = None,
    progress: Callable[[CohortProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
):
    """Segment every case of ``inputs`` into ``out/<case id>/``; returns the cohort table.

    Each case gets what ``medseg segment`` writes, a thumbnail and a manifest (written last).
    Cases whose manifest matches this run (model, options, inputs, outputs) are skipped; a
    case without one, or with a damaged output, is (re)done. ``out/cohort.csv`` (and
    ``cohort.parquet`` with pyarrow) and ``out/qc.html`` are written at the end, also when
    the run is interrupted.

    Args:
        inputs: files, DICOM folders, folders, CSV lists, BIDS datasets (see
            :mod:`napari_medseg.batch.inputs`).
        out: the cohort folder (created; locked while the run goes on).
        client: a ``distributed.Client`` to use as it is; None: one is started from ``cluster``.
        model, device, precision, batch_size, postprocessing, refine, uncertainty, samples, ensemble,
            gradcam, gradcam_method, dicom_seg, figure: as for ``medseg segment`` (each
            case's summary figure is linked from its row of the QC page).
        overwrite: redo cases finished with another model, other options or changed inputs
            (without it such cases refuse the run before anything starts).
        retries: further tries of a failed case before it is recorded as failed, whether
            it raised or its worker process died (killed, crashed, out of memory).
        cluster: where to run when no ``client`` is given (default: a local cluster).
        progress: called with a :class:`CohortProgress` at the start and after each case.
        should_stop: checked after each case; True stops the run like Ctrl-C (raises
            :class:`~napari_medseg.control.Cancelled` once the table is written).

    Returns:
        A pandas DataFrame, one row per case (see :mod:`napari_medseg.batch.table`);
        ``table.attrs["run"]`` holds this run's counts (``ran``, ``resumed``, ``failed``,
        ``model_loads``, ``workers``) and the Dask ``dashboard`` address ("" when none), and
        ``table.attrs["files"]`` the files written.

    Raises:
        FileNotFoundError: an input does not exist.
        ResultsExistError: finished cases differ from this run and ``overwrite`` is False.
        FolderLockedError: another run is using ``out``.
        BundleError: the model cannot be found.
        FigureUnavailableError: ``figure`` without matplotlib (before anything runs).
        KeyboardInterrupt, Cancelled: after the partial table was written.
    """
    from ..io.folder_lock import FolderLock

    if retries < 0:
        raise ValueError(f"retries {retries} must be 0 or more")
    if figure:
        from ..export.figure import require_matplotlib

        require_matplotlib()
    out = Path(out)
    cases = _cases(inputs, out)
    plan = make_plan(model, device=device, precision=precision, batch_size=batch_size, postprocessing=postprocessing,
                     refine=refine, uncertainty=uncertainty, samples=samples, ensemble=ensemble, gradcam=gradcam,
                     gradcam_method=gradcam_method, dicom_seg=dicom_seg, figure=figure)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    with FolderLock(out / COHORT_LOCK, what=f"cohort folder {out}"):
        return _run_locked(cases, out, plan, overwrite, client, cluster, retries, progress, should_stop)


def _run_locked(cases, out: Path, plan: CohortPlan, overwrite: bool, client, cluster, retries, progress, should_stop):
    """:func:`run_cohort` once the cohort folder is held: resume, run, write the table."""
    rows, todo = _resume(cases, out, plan, overwrite)
    stats: dict[str, Any] = {"cases": len(cases), "resumed": len(rows), "ran": 0, "failed": 0, "model_loads": 0, "workers": 0,
                             "dashboard": ""}  # fmt: skip
    try:
        if todo:
            with _client(client, cluster or ClusterOptions(), retries) as active:
                _run_cases(active, todo, out, plan, retries, rows, stats, progress, should_stop)
    finally:
        for case in cases:
            rows.setdefault(case.case_id, pending_row(case))
        table = _write_outputs(rows, out)
        table.attrs["run"] = stats
    return table


def _cases(inputs: str | os.PathLike | Sequence[str | os.PathLike], out: Path) -> list[Case]:
    """The cases of ``inputs`` (``out`` excluded), or ValueError naming the inputs when none."""
    listed = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    cases = discover_cases(listed, exclude=out)
    if not cases:
        raise ValueError(f"no cases found in {', '.join(map(str, listed))}")
    return cases


def _resume(cases: list[Case], out: Path, plan: CohortPlan, overwrite: bool) -> tuple[dict[str, dict], list[Case]]:
    """Rows of cases finished by earlier runs, and the cases left to do.

    Raises:
        ResultsExistError: cases finished with another model or options, without ``overwrite``.
    """
    from ..export.result_set import ResultsExistError

    rows: dict[str, dict] = {}
    todo, changed = [], []
    for case in cases:
        state, manifest = case_state(case, out / case.case_id, model=plan.model_identity(), options=plan.options())
        if state == FINISHED:
            rows[case.case_id] = {**manifest["row"], "resumed": True}
            continue
        if state == CHANGED:
            changed.append((case, manifest))
        todo.append(case)
    if changed and not overwrite:
        case, manifest = changed[0]
        more = f" (and {len(changed) - 1} more cases)" if len(changed) > 1 else ""
        why = difference(manifest, model=plan.model_identity(), options=plan.options())
        raise ResultsExistError(
            f"{out / case.case_id} holds results made with {why}{more}; they are kept: pass --overwrite "
            "(overwrite=True) to redo them, or choose another output folder"
        )
    if rows:
        logger.info("%d of %d cases finished earlier: skipped", len(rows), len(cases))
    return rows, todo


@contextmanager
def _client(client: Any, options: ClusterOptions, retries: int) -> Iterator[Any]:
    """The caller's client as it is, or one on a cluster started (and closed) here.

    A scheduler started here lets a task outlive more worker deaths than the case's tries
    (Dask's ``allowed-failures``, 3 by default, counts every task queued on a dying worker,
    not only the one that killed it): :class:`~.attempts.CaseAttempts` stops the case that
    does after its tries. A caller's scheduler keeps its own setting; when that is lower,
    such a case fails with Dask's ``KilledWorker`` sooner.
    """
    if client is not None:
        yield client
        return
    import dask
    import distributed  # noqa: F401 - its configuration defaults must be in before the set below:
    # a ``dask.config.set`` of a key whose section is missing removes the whole section on exit

    allowed = max(int(dask.config.get("distributed.scheduler.allowed-failures", 3)), retries + 3)
    with dask.config.set({"distributed.scheduler.allowed-failures": allowed}), open_client(options) as active:
        yield active


def _run_cases(client, todo, out, plan, retries, rows, stats, progress, should_stop) -> None:
    """Submit one task per case and collect the rows as they complete (stats updated in place)."""
    from distributed import as_completed

    from ..control import Cancelled
    from .worker import model_loads, register_model_cache, segment_case

    register_model_cache(client)
    token = uuid.uuid4().hex[:8]
    attempts = CaseAttempts(str(out / ATTEMPTS_FOLDER), token, retries + 1)
    pending = {
        client.submit(segment_case, case, str(out), plan, attempts, key=f"medseg-case-{case.case_id}-{token}",
                      retries=retries, pure=False): case
        for case in todo
    }  # fmt: skip
    total = len(rows) + len(todo)
    started = time.perf_counter()
    dashboard = stats["dashboard"] = _dashboard(client)
    logger.info("Dask dashboard: %s", dashboard or "none (the scheduler serves one when bokeh is installed)")
    resumed = stats["resumed"]
    _report(progress, total, resumed, stats, started, dashboard)
    try:
        # results come with the completion, before a worker that dies later can lose them
        for future, result in as_completed(list(pending), with_results=True, raise_errors=False):
            case = pending.pop(future)
            rows[case.case_id] = _outcome(future, result, case)
            # Forget the result at once: a finished case's result held on a worker that dies
            # later would make Dask compute the case again.
            future.release()
            stats["ran" if rows[case.case_id]["status"] == "done" else "failed"] += 1
            _report(progress, total, resumed, stats, started, dashboard)
            if should_stop is not None and should_stop() and pending:
                raise Cancelled("cohort stopped on request")
    except BaseException:
        client.cancel(list(pending))
        logger.warning("cohort stopped: %d cases not reached are left for the next run", len(pending))
        raise
    finally:
        loads = _safe(lambda: model_loads(client), {})
        stats.update(model_loads=sum(loads.values()), workers=len(loads))
        shutil.rmtree(attempts.folder, ignore_errors=True)


def _outcome(future, result: Any, case: Case) -> dict[str, Any]:
    """A completed case's row: the worker's, or the error after the retries.

    ``result`` is what ``as_completed(with_results=True, raise_errors=False)`` gives: the
    row, an error's (type, exception, traceback), or the exception of a cancelled task."""
    if isinstance(result, dict):
        return result
    if isinstance(result, tuple) and len(result) == 3 and isinstance(result[1], BaseException):
        error = result[1]
    elif isinstance(result, BaseException):
        error = result
    else:
        error = RuntimeError(f"the task ended without a row ({future.status}: {result!r})")
    logger.warning("case %s failed: %s: %s", case.case_id, type(error).__name__, error)
    return failed_row(case, error)


def _report(progress, total, resumed, stats, started, dashboard) -> None:
    if progress is not None:
        progress(CohortProgress(total=total, resumed=resumed, done=stats["ran"], failed=stats["failed"],
                                elapsed_s=time.perf_counter() - started, dashboard=dashboard))  # fmt: skip


def _dashboard(client) -> str:
    """The dashboard's address when the scheduler serves one (it needs bokeh)."""
    services = _safe(lambda: client.scheduler_info().get("services", {}), {})
    return str(client.dashboard_link) if "dashboard" in services else ""


def _write_outputs(rows: dict[str, dict], out: Path):
    """The table (CSV, Parquet) and the QC page; returns the table."""
    from .qc import write_qc_page

    table = make_table(list(rows.values()))
    files = write_table(table, out)
    files["qc"] = write_qc_page(table, out, lambda case_id: _thumbnail(out / case_id), lambda case_id: _summary_figure(out / case_id))
    table.attrs["files"] = {key: str(path) for key, path in files.items()}
    return table


def _summary_figure(case_dir: Path) -> str | None:
    """The case's summary figure, relative to the cohort folder, when it has one."""
    from ..export.figure import FIGURE_SUFFIX

    found = sorted(case_dir.glob(f"*{FIGURE_SUFFIX}"))
    return f"{case_dir.name}/{found[0].name}" if found else None


def _thumbnail(case_dir: Path) -> bytes | None:
    try:
        return (case_dir / THUMBNAIL_NAME).read_bytes()
    except OSError:
        return None


def _safe(call, default):
    """``call()``, or ``default`` when the cluster is already gone (after Ctrl-C)."""
    try:
        return call()
    except Exception:  # noqa: BLE001 - counts are informative; the run's own error matters
        return default
