"""``medseg batch INPUTS... -o OUTDIR``: a cohort on Dask, one folder per case, a table and a QC page."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .segment import DEFAULT_MODEL, REFINE_HELP


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "batch",
        help="segment a cohort on Dask; writes OUTDIR/<case>/..., cohort.csv, qc.html",
        description=(
            "Segment many scans as 'medseg segment' would, one folder per case under OUTDIR, on a local Dask "
            "cluster, a running scheduler or SLURM/PBS jobs. Finished cases are skipped on a re-run; a failed "
            "case is retried, then recorded with its error, and the cohort goes on. Exit 1 when cases failed."
        ),
    )
    parser.add_argument("inputs", nargs="+", help="files, DICOM folders, folders (recursive), a CSV with a path column, a BIDS dataset")
    parser.add_argument("-o", "--output", required=True, type=Path, help="cohort folder (created; locked while the run goes on)")
    _add_segment_options(parser)
    _add_cluster_options(parser)
    parser.add_argument("--retries", type=int, default=1, help="further tries of a failed case (default 1)")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo cases finished with another model, other options or changed inputs")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.set_defaults(run=run)


def _add_segment_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``medseg segment`` that apply to every case."""
    group = parser.add_argument_group("segmentation (as for medseg segment)")
    group.add_argument("--model", default=DEFAULT_MODEL, help=f"bundle name or path (default {DEFAULT_MODEL})")
    group.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                       help="auto: one GPU per worker when there are GPUs, else the CPU")  # fmt: skip
    group.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    group.add_argument("--batch", type=int, default=None, help="slices (2D) or windows (3D) per forward pass")
    group.add_argument("--no-postprocess", action="store_true", help="skip the bundle's post-processing")
    group.add_argument("--refine", action="store_true", help=REFINE_HELP)
    group.add_argument("--uncertainty", default="none", choices=["none", "mc-dropout", "tta", "ensemble"])
    group.add_argument("--samples", type=int, default=10, help="samples for mc-dropout and tta (default 10)")
    group.add_argument("--ensemble", nargs="+", default=[], metavar="MODEL",
                       help="further bundles for --uncertainty ensemble (default: as medseg segment, the shipped "
                            "bundles with the same classes)")  # fmt: skip
    group.add_argument("--gradcam", nargs="+", default=[], metavar="CLASS", help="write Grad-CAM maps for these classes")
    group.add_argument("--gradcam-method", default="gradcam", choices=["gradcam", "gradcam++"])
    group.add_argument("--dicom-seg", action=argparse.BooleanOptionalAction, default=None,
                       help="also write <stem>_seg.dcm (default: for DICOM inputs whose headers allow it)")  # fmt: skip
    group.add_argument("--figure", action="store_true",
                       help="also write <stem>_summary.png per case, linked from qc.html (needs the figure extra)")  # fmt: skip


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("where it runs (Dask)")
    group.add_argument("--scheduler", default="local", metavar="local|ADDRESS|slurm|pbs",
                       help="local: a cluster on this machine (default); ADDRESS: a running scheduler "
                            "(tcp://host:8786); slurm/pbs: one job per worker (needs dask-jobqueue)")  # fmt: skip
    group.add_argument("--workers", type=int, default=None,
                       help="worker processes, one model each (default: sized to the cores, memory and GPUs)")  # fmt: skip
    group.add_argument("--threads-per-worker", type=int, default=None, help="torch threads per worker")
    group.add_argument("--gpus-per-worker", type=int, default=0, help="GPUs each SLURM/PBS job asks for")
    group.add_argument("--queue", default=None, help="SLURM partition / PBS queue")
    group.add_argument("--walltime", default="01:00:00", help="job time limit (default 01:00:00)")
    group.add_argument("--memory", default=None, help="memory per job, e.g. 16GB (default 4GB per thread)")
    group.add_argument("--account", default=None, help="account to charge the jobs to")
    group.add_argument("--job-extra", action="append", default=[], metavar="DIRECTIVE",
                       help="further job directive, e.g. --job-extra=--constraint=a100 (repeatable)")  # fmt: skip
    group.add_argument("--dashboard-address", default=":8787", help="local cluster dashboard (default :8787)")


def run(args: argparse.Namespace) -> int:
    import logging

    from ..batch.cluster import ClusterOptions
    from ..batch.run import run_cohort

    import distributed  # noqa: F401 - sets up Dask's logging, which the next line quietens

    if not args.verbose:  # Dask logs its cluster's start and stop at INFO through its own handler
        logging.getLogger("distributed").setLevel(logging.WARNING)

    cluster = ClusterOptions(
        scheduler=args.scheduler, workers=args.workers, threads_per_worker=args.threads_per_worker,
        gpus_per_worker=args.gpus_per_worker, queue=args.queue, walltime=args.walltime, memory=args.memory,
        account=args.account, job_extra=tuple(args.job_extra), dashboard_address=args.dashboard_address,
    )  # fmt: skip
    line = None if args.quiet else ProgressLine()
    table = run_cohort(
        args.inputs, args.output, model=args.model, device=args.device, precision=args.precision,
        batch_size=args.batch, postprocessing=not args.no_postprocess, refine=args.refine, uncertainty=args.uncertainty,
        samples=args.samples, ensemble=args.ensemble, gradcam=args.gradcam, gradcam_method=args.gradcam_method,
        dicom_seg=args.dicom_seg, figure=args.figure, overwrite=args.overwrite, retries=args.retries, cluster=cluster, progress=line,
    )  # fmt: skip
    run_stats = table.attrs.get("run", {})
    print(f"{run_stats.get('ran', 0)} cases segmented, {run_stats.get('resumed', 0)} finished earlier, "
          f"{run_stats.get('failed', 0)} failed; model loads: {run_stats.get('model_loads', 0)} "
          f"on {run_stats.get('workers', 0)} workers")  # fmt: skip
    for path in table.attrs.get("files", {}).values():
        print(path)
    if "parquet" not in table.attrs.get("files", {}):
        print("(no cohort.parquet: install pyarrow for it)")
    for _, row in table[table["status"] == "failed"].iterrows():
        print(f"failed: {row['case_id']}: {row['error']}", file=sys.stderr)
    return 1 if run_stats.get("failed") else 0


class ProgressLine:
    """Prints the cohort's progress on stderr: redrawn in a terminal, every 10% otherwise."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._shown_dashboard = False
        self._last_decile = -1

    def __call__(self, progress) -> None:
        if not self._shown_dashboard:  # the first call comes when the cases are submitted
            where = progress.dashboard or "none (the scheduler serves one when bokeh is installed)"
            self.stream.write(f"Dask dashboard: {where}\n")
            self._shown_dashboard = True
        if self._tty:
            end = "\n" if progress.finished >= progress.total else ""
            self.stream.write(f"\rcohort: {progress.line()}\033[K{end}")
        else:
            decile = int(10 * progress.finished / progress.total) if progress.total else 10
            if decile == self._last_decile:
                return
            self._last_decile = decile
            self.stream.write(f"cohort: {progress.line()}\n")
        self.stream.flush()
