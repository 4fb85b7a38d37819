"""Cohort throughput: ``medseg batch`` on 1 and 2 workers against a shell loop of ``medseg segment``.

    python bench/cohort.py [--cases 20] [--model brain-tissue-unet] [--spacing 2.0] [--out DIR]

The cases are copies of the dev subject's T1 (``shared/data/dev-subject/t1.nii.gz``)
resampled to ``--spacing`` mm (small files by default; the model still segments on its own
1 mm grid, so the network's work per case is that of a full-size scan), each with a little
noise of its own so that no two files are the same. It times, on the same cases and model:

- ``shell_loop``: ``for f in cases; do medseg segment $f -o ...; done`` (one process per
  case: Python, torch and the model are loaded every time; torch uses every core);
- ``workers_1``: ``run_cohort`` on a local cluster of 1 worker using every core;
- ``workers_1_thread_1``: 1 worker with a single thread (one core of the machine idle):
  how the throughput scales with workers alone, apart from how well torch uses threads;
- ``workers_2``: the same with 2 workers, the cores split between them.

Each cohort time includes starting and stopping its cluster. Prints JSON: seconds, cases
per minute, model loads (must equal the workers), the speed-ups (targets: 2 workers >= 1.7x
one worker, against one worker of one thread and of every core, and >= 2x the shell loop),
the per-case cost in core-seconds from which the README's estimate for 100,000 scans is computed, and per configuration the median
time of a whole case, of its ``segment()`` and of its network (from the reports), which
tell the work from what surrounds it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEV_T1 = REPO.parent / "shared" / "data" / "dev-subject" / "t1.nii.gz"


def make_cases(source: Path, folder: Path, count: int, spacing: float) -> list[Path]:
    """``count`` copies of ``source`` at ``spacing`` mm, each with its own faint noise."""
    from scipy.ndimage import zoom

    from napari_medseg.io import read_volume, write_volume
    from napari_medseg.types import Geometry

    volume = read_volume(source)
    factors = [s / spacing for s in volume.spacing]
    array = zoom(volume.array.astype(np.float32), factors, order=1)
    geometry = Geometry((spacing,) * 3, volume.origin, volume.direction)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    scale = float(np.percentile(array, 99)) * 0.002
    paths = []
    for index in range(count):
        noisy = np.clip(array + rng.normal(0, scale, array.shape), 0, None)  # MR magnitudes stay >= 0
        paths.append(write_volume(folder / f"case{index:03d}.nii.gz", noisy.astype(np.float32), geometry))
    return paths


def time_shell_loop(cases: list[Path], out: Path, model: str) -> dict:
    """A bash loop of ``medseg segment``, as the README described before ``medseg batch``."""
    medseg = Path(sys.executable).with_name("medseg")
    names = " ".join(shlex.quote(str(p)) for p in cases)
    script = (f'for f in {names}; do n=$(basename "$f" .nii.gz); '
              f'{shlex.quote(str(medseg))} segment "$f" -o {shlex.quote(str(out))}/"$n" --model {shlex.quote(model)} --quiet '
              '>/dev/null || exit 1; done')  # fmt: skip
    started = time.perf_counter()
    subprocess.run(["bash", "-c", script], check=True)
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "cases_per_minute": round(60 * len(cases) / seconds, 2), **report_timings(out)}


def report_timings(out: Path) -> dict:
    """Medians over the cases' reports: the whole ``segment()`` (``timings_s.total``: prepare,
    network, post-processing, restore; no reading or writing) and its network part, in s.
    Inside a worker they show whether the work itself is slower there than in a process of
    its own, or the batch path adds time around it."""
    timings = [json.loads(path.read_text())["timings_s"] for path in sorted(out.glob("*/*_report.json"))]
    return {
        "median_segment_s": round(float(np.median([t["total"] for t in timings])), 3),
        "median_network_s": round(float(np.median([t["network"] for t in timings])), 3),
    }


def time_cohort(cases: list[Path], out: Path, model: str, workers: int, threads: int) -> dict:
    """``run_cohort`` on a fresh local cluster of ``workers`` processes of ``threads`` threads each."""
    from napari_medseg.batch import run_cohort
    from napari_medseg.batch.cluster import ClusterOptions

    options = ClusterOptions(workers=workers, threads_per_worker=threads, dashboard_address=":0")
    started = time.perf_counter()
    table = run_cohort(cases, out, model=model, cluster=options, retries=0)
    seconds = time.perf_counter() - started
    run = table.attrs["run"]
    case_seconds = table["seconds"].astype(float)
    return {
        "seconds": round(seconds, 2),
        "cases_per_minute": round(60 * len(cases) / seconds, 2),
        "done": int((table.status == "done").sum()),
        "model_loads": run["model_loads"],
        "workers": run["workers"],
        "threads_per_worker": threads,
        "median_case_seconds": round(float(case_seconds.median()), 3),
        **report_timings(out),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--model", default="brain-tissue-unet")
    parser.add_argument("--spacing", type=float, default=2.0, help="voxel size of the case files in mm (default 2.0: small files)")
    parser.add_argument("--source", type=Path, default=DEV_T1)
    parser.add_argument("--out", type=Path, default=None, help="working folder (default: a temporary one)")
    args = parser.parse_args(argv)
    if not args.source.is_file():
        print(json.dumps({"skipped": f"source scan {args.source} not found"}))
        return 0
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="medseg-bench-cohort-") as temporary:
        work = args.out or Path(temporary)
        cases = make_cases(args.source, work / "cases", args.cases, args.spacing)
        from napari_medseg.io import read_volume

        shape = list(read_volume(cases[0]).shape)
        loop = time_shell_loop(cases, work / "loop", args.model)
        one = time_cohort(cases, work / "workers_1", args.model, 1, cores)
        single = time_cohort(cases, work / "workers_1_thread_1", args.model, 1, 1)
        two = time_cohort(cases, work / "workers_2", args.model, 2, max(1, cores // 2))
    per_case_core_s = two["seconds"] * min(cores, 2) / args.cases
    result = {
        "cases": args.cases,
        "case_shape_zyx": shape,
        "spacing_mm": args.spacing,
        "model": args.model,
        "cores": cores,
        "shell_loop": loop,
        "workers_1": one,
        "workers_1_thread_1": single,
        "workers_2": two,
        "speedup_2_workers_vs_1": round(two["cases_per_minute"] / one["cases_per_minute"], 2),
        "speedup_2_workers_vs_1_single_thread": round(two["cases_per_minute"] / single["cases_per_minute"], 2),
        "speedup_2_workers_vs_shell_loop": round(two["cases_per_minute"] / loop["cases_per_minute"], 2),
        "loads_equal_workers": all(run["model_loads"] == run["workers"] for run in (one, single, two)),
        "core_seconds_per_case": round(per_case_core_s, 2),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
