"""Whole-brain segmentation speed: load to written files, and the network's achieved FLOP/s.

    python bench/whole_brain_speed.py [--models brain-structures brain-tissue-unet] [--repeats 3] [--baseline REV]

For each model and scan (the dev subject, a skull-stripped 1 mm T1 of 142x178x142, and the
real sample head, a whole head of 256^3 at 1 mm), side by side in one run:

- ``cli_seconds``: wall time of ``medseg segment SCAN -o TMP --model M --quiet`` in a fresh
  process (interpreter start, imports, reading, model loading, network, post-processing,
  writing every output file), median of ``--repeats``; and the report's own timings;
- ``network_gflop``: floating-point operations of the 2.5D network over the slices of the
  scan's model grid it runs on (those holding some of the brain the locator found, as in
  ``segment()``; ``slices_with_brain`` of ``model_grid[0]``), counted by
  ``torch.utils.flop_counter`` (a multiply-add is 2 FLOP; the locator's 3D pass is counted
  separately as ``locator_gflop``);
- ``achieved_gflops``: ``network_gflop`` divided by the network's measured seconds, beside
  ``matmul_peak_gflops``: a large matrix product in the same dtype as the network's
  autocast (bf16 where the CPU has it), measured in the same process, best of five.

With ``--baseline REV`` the same commands also run on the code at commit REV (a temporary
``git worktree`` imported first), alternating with this checkout run by run, and each row
gets ``baseline_cli_seconds`` and ``ratio_to_baseline``.

SynthSeg, the reference for 32 structures, takes about a minute per scan on a CPU; the
issue's target for ``brain-structures`` is ``cli_seconds`` <= 15 on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from baseline_tree import baseline_worktree

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SCANS = {
    "dev subject (stripped, 142x178x142)": SHARED / "dev-subject" / "t1.nii.gz",
    "sample head (whole head, 256^3)": SHARED / "sample-head" / "t1.nii.gz",
}


def matmul_peak_gflops(dtype, size: int = 2048, repeats: int = 5) -> float:
    """Best of ``repeats`` timings of one (size x size) @ (size x size) product, in GFLOP/s."""
    import torch

    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)  # warm-up: kernels chosen, pages touched
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def network_figures(model_name: str, scan: Path) -> dict:
    """FLOPs of the network and the locator on ``scan``, the network's seconds, the peak."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from napari_medseg.inference import autocast_dtype
    from napari_medseg.inference.engine import predict_probabilities
    from napari_medseg.inference.locator import find_brain, locator_of
    from napari_medseg.io import read_volume
    from napari_medseg.models import load_model
    from napari_medseg.preprocess import prepare_for_model

    model = load_model(model_name, device="cpu").eval()
    device = torch.device("cpu")
    amp = autocast_dtype(device, "auto")
    prepared = prepare_for_model(read_volume(scan), model.config)
    figures = {"model_grid": list(prepared.image.shape)}
    within = None
    if locator_of(model) is not None:  # as segment() does: the locator first, the network where it found the brain
        counter = FlopCounterMode(display=False)
        with counter:
            within, _ = find_brain(model, prepared.image, prepared.geometry, device)
        figures["locator_gflop"] = round(counter.get_total_flops() / 1e9, 2)
        figures["slices_with_brain"] = int(within.reshape(within.shape[0], -1).any(axis=1).sum())

    def run_network():
        return predict_probabilities(model, prepared.image, device=device, amp=amp, within=within)

    counter = FlopCounterMode(display=False)
    with counter:
        run_network()
    flop = counter.get_total_flops()
    start = time.perf_counter()
    run_network()
    seconds = time.perf_counter() - start
    figures.update({
        "network_gflop": round(flop / 1e9, 1),
        "network_seconds": round(seconds, 2),
        "achieved_gflops": round(flop / seconds / 1e9, 1),
        "autocast": str(amp).replace("torch.", "") if amp else "fp32",
        "matmul_peak_gflops": round(matmul_peak_gflops(amp or torch.float32), 1),
        "threads": torch.get_num_threads(),
    })  # fmt: skip
    figures["share_of_peak"] = round(figures["achieved_gflops"] / figures["matmul_peak_gflops"], 3)
    return figures


def cli_seconds(model_name: str, scan: Path, repeats: int, trees: dict[str, Path | None]) -> dict:
    """Median wall time of a fresh ``medseg segment`` process per code tree (None: this
    checkout; a path: that tree imported first), the trees alternating run by run, with the
    report's timings of this checkout's last run."""
    times: dict[str, list[float]] = {name: [] for name in trees}
    report, sizes = {}, {}
    for _ in range(repeats):
        for name, tree in trees.items():
            env = dict(os.environ, **({"PYTHONPATH": str(tree)} if tree else {}))
            with tempfile.TemporaryDirectory() as out:
                command = [str(Path(sys.executable).parent / "medseg"), "segment", str(scan), "-o", out, "--model", model_name, "--quiet"]
                start = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True, env=env)
                times[name].append(time.perf_counter() - start)
                if tree is None:
                    report = json.loads(next(Path(out).glob("*_report.json")).read_text())
                    sizes = {p.name.split("_", 1)[-1]: round(p.stat().st_size / 1e6, 1) for p in Path(out).iterdir()}
    row = {"cli_seconds": round(statistics.median(times["current"]), 2), "all_seconds": [round(t, 2) for t in times["current"]]}
    for name in trees:
        if name != "current":
            row[f"{name}_cli_seconds"] = round(statistics.median(times[name]), 2)
            row[f"{name}_all_seconds"] = [round(t, 2) for t in times[name]]
            row[f"ratio_to_{name}"] = round(row["cli_seconds"] / row[f"{name}_cli_seconds"], 3)
    return {**row, "report_timings": report.get("timings_s"), "output_mb": sizes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["brain-structures", "brain-tissue-unet"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", metavar="REV", help="also time the code at this commit, alternating run by run")
    parser.add_argument("--figures", nargs=2, metavar=("MODEL", "SCAN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.figures:  # one model and scan in its own process, so that nothing is warm
        print(json.dumps(network_figures(args.figures[0], Path(args.figures[1]))))
        return
    missing = [str(path) for path in SCANS.values() if not path.is_file()]
    if missing:
        sys.exit(f"scans not found: {missing}")
    results = []
    with tempfile.TemporaryDirectory() as scratch, contextlib.ExitStack() as stack:
        trees: dict[str, Path | None] = {"current": None}
        if args.baseline:
            trees["baseline"] = stack.enter_context(baseline_worktree(args.baseline, Path(scratch)))
        for model_name in args.models:
            for scan_name, scan in SCANS.items():
                row = {"model": model_name, "scan": scan_name, **cli_seconds(model_name, scan, args.repeats, trees)}
                done = subprocess.run([sys.executable, __file__, "--figures", model_name, str(scan)],
                                      capture_output=True, text=True, check=True)  # fmt: skip
                row.update(json.loads(done.stdout.strip().splitlines()[-1]))
                results.append(row)
    baseline = {row["scan"]: row["cli_seconds"] for row in results if row["model"] == args.models[-1]}
    for row in results:
        row["cli_ratio_to_" + args.models[-1]] = round(row["cli_seconds"] / baseline[row["scan"]], 2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
