"""One case of a cohort, start to finish, with a loaded model (runs in a worker process).

The case's folder gets exactly what ``medseg segment`` writes (through
:func:`~napari_medseg.export.run.run_segmentation`, so the same result set and folder lock),
then a thumbnail and, last, the manifest that marks the case finished.
"""

from __future__ import annotations

import logging
import pickle
import time
from pathlib import Path
from typing import Any, Sequence

from .inputs import Case
from .manifest import THUMBNAIL_NAME, build_manifest, remove_manifest, write_manifest
from .plan import CohortPlan

__all__ = ["CaseError", "run_case"]

logger = logging.getLogger(__name__)


class CaseError(RuntimeError):
    """An error from a case whose own exception type cannot travel between processes."""


def run_case(case: Case, out: Path, plan: CohortPlan, model: Any, ensemble: Sequence[Any] = (), *, worker: str = "") -> dict[str, Any]:
    """Segment ``case`` into ``out/<case id>/``; returns its row of the cohort table.

    Args:
        model: the loaded bundle (on the device it should run on).
        ensemble: loaded further members for ``plan.uncertainty == "ensemble"``.
        worker: the worker's name, for the table.

    Raises:
        the case's error (VolumeReadError, ResultSetError, MemoryError, ...) unchanged when it
        pickles, else :class:`CaseError` with its type and message.
    """
    try:
        return _run_case(case, Path(out), plan, model, ensemble, worker)
    except Exception as exc:
        raise portable(exc) from None


def portable(exc: BaseException) -> BaseException:
    """``exc`` itself when it survives pickling, else a :class:`CaseError` saying the same."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any failure to round-trip means: send a plain error
        return CaseError(f"{type(exc).__name__}: {exc}")


def _run_case(case: Case, out: Path, plan: CohortPlan, model: Any, ensemble: Sequence[Any], worker: str) -> dict[str, Any]:
    from ..io import read_volume
    from ..export.run import run_segmentation
    from .table import row_from_report

    started = time.perf_counter()
    case_dir = out / case.case_id
    remove_manifest(case_dir)  # unfinished until the new manifest is in
    volume = read_volume(case.path, series_uid=case.series_uid)
    outputs = run_segmentation(
        volume, model, case_dir, case.stem,
        device=str(next(model.parameters()).device), precision=plan.precision, batch_size=plan.batch_size,
        postprocessing=plan.postprocessing, refine=plan.refine, uncertainty=plan.uncertainty, samples=plan.samples,
        ensemble=ensemble, gradcam=plan.gradcam, gradcam_method=plan.gradcam_method,
        dicom_seg=wants_dicom_seg(plan.dicom_seg, volume, case.path), figure=plan.figure,
        overwrite=True,  # this case has no manifest: whatever is there is half-written or stale
    )  # fmt: skip
    report = _read_json(outputs["report"])
    _write_thumbnail(case_dir, volume, outputs["seg"], model.config)
    row = row_from_report(case, report, seconds=time.perf_counter() - started, worker=worker)
    names = [path.name for path in outputs.values()]
    manifest = build_manifest(case, case_dir, model=plan.model_identity(), options=plan.options(), outputs=names, row=row)
    write_manifest(case_dir, manifest)
    logger.info("case %s done in %.1f s", case.case_id, row["seconds"])
    return row


def wants_dicom_seg(asked: bool | None, volume, source: str) -> bool:
    """Whether the case gets a DICOM SEG, decided as ``medseg segment`` decides.

    Raises:
        ValueError: one was asked for and the input cannot have one (named).
    """
    from ..io.dicom_seg import dicom_seg_problem

    if asked is False:
        return False
    problem = dicom_seg_problem(volume.meta)
    if problem is not None and asked:
        raise ValueError(f"no DICOM SEG can be written for {source}: {problem}")
    return problem is None


def _write_thumbnail(case_dir: Path, volume, seg_path: Path, config) -> None:
    """Mid-slices with the written labels over them (read back: what the file holds)."""
    from ..io import read_volume
    from .qc import label_colors, png_bytes, thumbnail

    labels = read_volume(seg_path).array
    picture = thumbnail(volume.array, labels, volume.spacing, label_colors(config))
    temporary = case_dir / f".{THUMBNAIL_NAME}.part"
    temporary.write_bytes(png_bytes(picture))
    temporary.replace(case_dir / THUMBNAIL_NAME)


def _read_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(Path(path).read_text(encoding="utf-8"))
