"""Training throughput of the shipped brain models' script, side by side with another commit.

    python bench/training_speed.py --baseline REV [--tasks structures tissue] [--minutes 2] [--repeats 1]

For each task, ``scripts/train_brain.py`` runs for ``--minutes`` of training (its own clock,
which starts when the first synthetic batch arrives, so reading the 20 label maps is not
counted) in a fresh process, once on this checkout and once on the code at commit REV (a
temporary ``git worktree``, imported first), alternating run by run. Both use the script's
defaults (one synthesis worker, two torch threads, bf16 autocast where the CPU has it,
batch 8 for 2.5D slabs, 4 for the locator's volumes) and a fresh network, and both read
the steps and minutes they record in ``meta.json``.

Prints JSON: per task, ``steps_per_minute`` (median over repeats) for this checkout and the
baseline, and ``ratio_to_baseline`` (> 1: this checkout trains faster). The bundles written
go to a temporary folder and are deleted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from baseline_tree import baseline_worktree

REPO = Path(__file__).resolve().parents[1]
MAPS = REPO.parent / "shared" / "data" / "synthseg-label-maps"


def steps_per_minute(tree: Path, task: str, minutes: float, out: Path) -> float:
    """Train ``task`` with the script in ``tree`` for ``minutes``; steps per minute it recorded."""
    command = [sys.executable, str(tree / "scripts" / "train_brain.py"), "--task", task, "--out", str(out),
               "--maps", str(MAPS), "--steps", "1000000", "--max-minutes", str(minutes), "--log-every", "1000"]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run(command, cwd=tree, env=environment, check=True, capture_output=True)
    training = json.loads((out / "meta.json").read_text())["training"]
    return training["steps"] / training["minutes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", metavar="REV", required=True, help="the commit to compare with")
    parser.add_argument("--tasks", nargs="+", default=["structures"], choices=["structures", "tissue", "locator"])
    parser.add_argument("--minutes", type=float, default=2.0, help="training minutes per run")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    if not MAPS.is_dir():
        raise SystemExit(f"label maps not found: {MAPS}")
    results = []
    with tempfile.TemporaryDirectory() as scratch, baseline_worktree(args.baseline, Path(scratch)) as baseline:
        for task in args.tasks:
            speeds: dict[str, list[float]] = {"current": [], "baseline": []}
            for repeat in range(args.repeats):
                for name, tree in (("current", REPO), ("baseline", baseline)):
                    out = Path(scratch) / f"{task}-{name}-{repeat}"
                    speeds[name].append(steps_per_minute(tree, task, args.minutes, out))
            current, before = statistics.median(speeds["current"]), statistics.median(speeds["baseline"])
            results.append({
                "task": task,
                "minutes_per_run": args.minutes,
                "steps_per_minute": round(current, 1),
                "baseline": args.baseline,
                "baseline_steps_per_minute": round(before, 1),
                "ratio_to_baseline": round(current / before, 2),
                "runs": {name: [round(v, 1) for v in values] for name, values in speeds.items()},
            })  # fmt: skip
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
