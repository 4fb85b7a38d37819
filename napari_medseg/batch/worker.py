"""The worker side of a cohort: one model per worker process, loaded once and reused.

:class:`ModelCache` is a Dask ``WorkerPlugin``: registered once with the scheduler, it is set
up in every worker process (also in one that replaces a killed worker) and keeps the models
that process loaded, keyed by (bundle, device), with a count of loads. :func:`segment_case`
is the task Dask runs per case.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from distributed import WorkerPlugin, get_worker

from .attempts import CaseAttempts
from .inputs import Case
from .plan import CohortPlan

__all__ = ["PLUGIN_NAME", "ModelCache", "register_model_cache", "model_loads", "segment_case"]

logger = logging.getLogger(__name__)

PLUGIN_NAME = "napari-medseg-models"


class ModelCache(WorkerPlugin):
    """Models of one worker process: ``(bundle path, device) -> model``, loaded on first use.

    A lock lets one case at a time use the models: Grad-CAM hooks and MC-dropout switch the
    model's state while a case runs, so two threads of a worker must not share it.
    """

    name = PLUGIN_NAME

    def setup(self, worker) -> None:
        self.worker_name = str(worker.name)
        self.models: dict[tuple[str, str], Any] = {}
        self.loads = 0
        self.lock = threading.Lock()

    def device_for(self, requested: str) -> str:
        """``"auto"``: this worker's own GPU when there are any (worker k gets GPU k mod n)."""
        import torch

        if requested != "auto":
            return requested
        if torch.cuda.is_available():
            return f"cuda:{_worker_index(self.worker_name) % torch.cuda.device_count()}"
        return "cpu"  # mps and cpu: as "auto" resolves them in segment, without a GPU to share

    def model(self, path: str, device: str) -> Any:
        """The model of bundle ``path`` on ``device``, loaded once per process."""
        key = (path, device)
        if key not in self.models:
            from ..models import load_model

            self.models[key] = load_model(path, device=device)
            self.loads += 1
            logger.info("worker %s (pid %d) loaded %s on %s", self.worker_name, os.getpid(), path, device)
        return self.models[key]


def register_model_cache(client) -> None:
    """Register :class:`ModelCache` unless the scheduler has it already (keeps loaded models
    of an earlier cohort on the same client)."""
    present = client.run_on_scheduler(_has_plugin)
    if not present:
        client.register_plugin(ModelCache(), name=PLUGIN_NAME)


def model_loads(client) -> dict[str, int]:
    """Worker address -> models loaded by its current process."""
    return client.run(_loads)


def segment_case(case: Case, out: str, plan: CohortPlan, attempts: CaseAttempts | None = None) -> dict[str, Any]:
    """The task of one case (runs in a worker): see :func:`napari_medseg.batch.case.run_case`.

    A case whose manifest already says it is finished with this plan (only possible within
    one run: finished cases are not planned) returns that manifest's row untouched.
    With ``attempts``, each start is recorded first, so a case whose worker died during its
    earlier tries fails with :class:`~napari_medseg.batch.attempts.WorkerDied` instead of
    running (and killing a worker) again.
    """
    from .case import run_case
    from .manifest import FINISHED, case_state

    # Run again by the scheduler after its result was lost with a killed worker, a case this
    # run already finished is not computed (nor written) twice: its manifest's row is the result.
    state, manifest = case_state(case, Path(out) / case.case_id, model=plan.model_identity(), options=plan.options())
    if state == FINISHED:
        return dict(manifest["row"])
    worker = get_worker()
    cache: ModelCache = worker.plugins[PLUGIN_NAME]
    with cache.lock:
        name = f"{cache.worker_name}:{os.getpid()}"
        if attempts is not None:
            attempts.start(case.case_id, worker=name)
        try:
            device = cache.device_for(plan.device)
            model = cache.model(plan.model_path, device)
            ensemble = [cache.model(path, device) for path in plan.ensemble]
            row = run_case(case, Path(out), plan, model, ensemble, worker=name)
        except Exception as exc:
            if attempts is not None:
                attempts.finish(case.case_id, exc)
            raise
        if attempts is not None:
            attempts.clear(case.case_id)
        return row


def _has_plugin(dask_scheduler=None) -> bool:
    return PLUGIN_NAME in getattr(dask_scheduler, "worker_plugins", {})


def _loads(dask_worker=None) -> int:
    cache = dask_worker.plugins.get(PLUGIN_NAME)
    return getattr(cache, "loads", 0)


def _worker_index(name: str) -> int:
    """A worker's number from its name (LocalCluster: "0", "1"; jobqueue: "SLURMCluster-3")."""
    digits = "".join(ch for ch in name.rsplit("-", 1)[-1] if ch.isdigit())
    return int(digits) if digits else 0
