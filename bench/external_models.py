"""An nnU-Net v2 model folder through this project against nnU-Net's own ``nnUNetPredictor``.

    python bench/external_models.py [--scan phantom] [--mirroring on] [--repeats 3]

The model folder is real and untrained: nnU-Net's fingerprint extractor, experiment planner
and preprocessing run on a synthetic CT dataset of 1 mm cases (``--case-shape``, default
64^3, so the planner gives a 64^3 patch), and nnU-Net's own trainer saves two folds of its
freshly initialised network (``tests/models/external/nnunet_folder.py``, run as a module).
Random weights cost the same time as trained ones; the labels they give mean nothing.
"Mirroring on" is a folder whose checkpoints allow the mirror axes nnU-Net's trainer sets
when training starts (all three), "off" one that allows none: both sides read the
checkpoint, so both mirror the same way. Both sides use both folds, tile step 0.5 and
Gaussian weights, on the CPU.

The CT (``--scan``): ``phantom`` (the default), the synthetic CT of ``nnunet_folder.py``
(``--phantom-shape`` voxels of ``--phantom-spacing`` mm; by default 38 x 120 x 120 voxels of
2.5 x 0.8 x 0.8 mm, a thick-slice CT that both sides resample to the plan's 1 mm, 95 x 96 x 96
voxels and 8 windows of 64^3 there), or a real CT from the pydicom wheels as
``bench/ood_scans.py`` stacks it (one or two real slices repeated into a slab of 1 mm slices,
``--slab-mm`` thick; 245^2 to 440^2 voxels a slice at 1 mm, 49 windows and more: long on a
few cores).

Two pairs, each run in its own fresh process, project and nnU-Net alternating, ``--repeats``
pairs, the same ``torch.set_num_threads`` on both sides (``--threads``, default all cores):

- ``in_memory``: ``napari_medseg.load_model(FOLDER)`` then
  ``napari_medseg.inference.segment(volume, model, device="cpu")`` against
  ``nnUNetPredictor(...).predict_single_npy_array(image, {"spacing": ...}, None, None, True)``
  (preprocessing, windows, resampling back, probabilities and labels; the scan is read and
  the model loaded before the clock starts). ``seconds`` is that call, ``cpu_seconds`` the
  process's CPU time (all threads) during it; ``peak_rss_mb`` the process's ``ru_maxrss``
  after it, ``added_mb`` its rise during it.
- ``files``: ``medseg segment CT.nii.gz -o OUT --model FOLDER --device cpu --quiet`` (labels,
  probabilities, report) against ``nnUNetv2_predict_from_modelfolder -i IN -o OUT -m FOLDER
  -f 0 1 -device cpu --save_probabilities -npp 1 -nps 1`` (labels, probabilities): wall time
  of the whole process (start, imports, loading, writing), ``cpu_seconds`` the CPU time of
  the process and its children, and ``peak_tree_pss_mb``, the
  largest sum of proportional set sizes over the process and its children (nnU-Net's
  worker processes; shared pages counted once), sampled every 0.1 s.
  nnU-Net's entry point sets its own thread count (all cores).

Sanity: ``label_agreement`` (fraction of voxels with equal labels) and
``max_probability_difference`` of the two in-memory predictions of the first pair.
Ratios are the project's median over nnU-Net's; the issue's targets are a time ratio
<= 1.1 and a memory ratio <= 1. On a machine with other work, ``cpu_seconds`` moves less
than the wall time. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FOLDS = ("0", "1")
SCANS = ("head_ct", "masked_head_ct", "abdomen_ct", "neck_ct", "phantom")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_folder(root: Path, case_shape: list[int], mirroring: bool) -> Path:
    """nnU-Net's 3d_fullres folder (two untrained folds) of 1 mm synthetic cases under ``root``."""
    from tests.models.external.nnunet_folder import DATASET_NAME, PLANS, TRAINER

    folder = root / "results" / DATASET_NAME / f"{TRAINER}__{PLANS}__3d_fullres"
    command = [sys.executable, "-m", "tests.models.external.nnunet_folder", str(root), "--configurations", "3d_fullres",
               "--shape", *map(str, case_shape), "--spacing", "1", "1", "1"] + (["--mirroring"] if mirroring else [])  # fmt: skip
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, timeout=1800)
    return folder


def write_scan(name: str, slab_mm: float, phantom_shape: list[int], phantom_spacing: list[float],
               out: Path) -> tuple[Path, str]:  # fmt: skip
    """The CT as ``out/ct_0000.nii.gz`` (nnU-Net's input naming), and a description."""
    from napari_medseg.io import write_volume
    from napari_medseg.types import Geometry, Volume

    if name == "phantom":
        from tests.models.external.nnunet_folder import synthetic_case

        spacing = tuple(float(s) for s in phantom_spacing)
        image = synthetic_case(99, tuple(phantom_shape), spacing)[0]
        volume = Volume(image, Geometry(spacing, (0.0, 0.0, 0.0)), modality="CT")
        described = f"synthetic CT phantom (body, bone and fat blobs, noise), {image.shape} voxels of {spacing} mm"
    else:
        sys.path.insert(0, str(REPO / "bench"))
        from ood_scans import ct_path, ct_slab

        from napari_medseg.io import read_volume

        volume = ct_slab(read_volume(ct_path(name)), slab_mm)
        described = (f"{name} ({ct_path(name).name}, real CT from the pydicom wheels): its slices repeated into a "
                     f"slab of 1 mm slices, {volume.shape} voxels of {tuple(round(s, 3) for s in volume.spacing)} mm")  # fmt: skip
    path = out / "ct_0000.nii.gz"
    write_volume(path, volume.array, volume, kind="image")
    return path, described


def run_in_memory(side: str, folder: Path, scan: Path, threads: int, save: Path | None) -> dict:
    """One in-memory segmentation by ``side`` ("project" or "nnunet") in this process."""
    import torch

    from napari_medseg.io import read_volume

    torch.set_num_threads(threads)
    volume = read_volume(scan)
    if side == "project":
        from napari_medseg import load_model
        from napari_medseg.inference import segment

        model = load_model(folder)
        before, cpu = _rss_mb(), time.process_time()
        start = time.perf_counter()
        result = segment(volume, model, device="cpu")
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        probabilities = np.moveaxis(result.probabilities, -1, 0)
    else:
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                    perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)  # fmt: skip
        predictor.initialize_from_trained_model_folder(str(folder), use_folds=FOLDS, checkpoint_name="checkpoint_final.pth")
        before, cpu = _rss_mb(), time.process_time()
        start = time.perf_counter()
        _, probabilities = predictor.predict_single_npy_array(
            volume.array[None].astype(np.float32), {"spacing": [float(s) for s in volume.spacing]}, None, None, True
        )
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = _rss_mb()
    if save is not None:
        np.save(save, np.asarray(probabilities, dtype=np.float32))
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak, "added_mb": peak - before,
            "threads": torch.get_num_threads()}  # fmt: skip


def files_command(side: str, folder: Path, scan: Path, out: Path) -> list[str]:
    if side == "project":
        return [str(BIN / "medseg"), "segment", str(scan), "-o", str(out), "--model", str(folder), "--device", "cpu", "--quiet"]
    return [str(BIN / "nnUNetv2_predict_from_modelfolder"), "-i", str(scan.parent), "-o", str(out), "-m", str(folder),
            "-f", *FOLDS, "-device", "cpu", "--save_probabilities", "-npp", "1", "-nps", "1", "--disable_progress_bar"]  # fmt: skip


def run_files(side: str, folder: Path, scan: Path) -> dict:
    """Wall time and peak summed PSS of one files-to-files run by ``side`` in a child process."""
    import psutil

    with tempfile.TemporaryDirectory() as out:
        cpu = _children_cpu()
        start = time.perf_counter()
        process = psutil.Popen(files_command(side, folder, scan, Path(out) / "out"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)  # fmt: skip
        peak = 0
        while process.poll() is None:
            peak = max(peak, _tree_pss(process))
            time.sleep(0.1)
        seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu
        if process.returncode:
            raise RuntimeError(f"{side} files run failed: {process.stderr.read().decode()[-2000:]}")
        written = sorted(p.name for p in (Path(out) / "out").iterdir())
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_tree_pss_mb": peak / 2**20, "written": written}


def _children_cpu() -> float:
    """User and system seconds of this process's finished (waited-for) children and theirs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _tree_pss(process) -> int:
    import psutil

    total = 0
    try:
        for p in [process, *process.children(recursive=True)]:
            total += p.memory_full_info().pss
    except psutil.Error:  # a child ended while being read
        pass
    return total


def one_run(kind: str, side: str, folder: Path, scan: Path, threads: int, save: Path | None) -> dict:
    """A measured run in a fresh process (this script's hidden ``--one`` mode); its JSON."""
    command = [sys.executable, __file__, "--one", kind, side, str(folder), str(scan), "--threads", str(threads)]
    command += ["--save", str(save)] if save is not None else []
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{kind} {side} failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(runs: dict[str, list[dict]], keys: tuple[str, ...]) -> dict:
    """Medians per side, every run's figures, and the project/nnU-Net ratio of each median."""
    summary = {}
    for side, rows in runs.items():
        summary[side] = {key: round(statistics.median(row[key] for row in rows), 2) for key in keys}
        summary[side]["all_seconds"] = [round(row["seconds"], 2) for row in rows]
    for key in keys:
        theirs = summary["nnunet"][key]
        summary[f"{key}_ratio"] = round(summary["project"][key] / theirs, 3) if theirs else None
    return summary


def compare_pair(kind: str, folder: Path, scan: Path, args, work: Path) -> dict:
    """``args.repeats`` alternating pairs of ``kind`` runs; for ``in_memory`` the agreement."""
    runs: dict[str, list[dict]] = {"project": [], "nnunet": []}
    for i in range(args.repeats):
        for side in ("project", "nnunet") if i % 2 == 0 else ("nnunet", "project"):
            save = work / f"{side}.npy" if kind == "in_memory" and i == 0 else None
            runs[side].append(one_run(kind, side, folder, scan, args.threads, save))
    if kind == "files":
        summary = summarise(runs, ("seconds", "cpu_seconds", "peak_tree_pss_mb"))
        summary["written"] = {side: rows[0]["written"] for side, rows in runs.items()}
        return summary
    summary = summarise(runs, ("seconds", "cpu_seconds", "peak_rss_mb", "added_mb"))
    ours, theirs = np.load(work / "project.npy"), np.load(work / "nnunet.npy")
    summary["label_agreement"] = float((ours.argmax(0) == theirs.argmax(0)).mean())
    summary["max_probability_difference"] = float(np.abs(ours - theirs).max())
    summary["threads"] = runs["project"][0]["threads"]
    return summary


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scan", default="phantom", choices=SCANS)
    parser.add_argument("--slab-mm", type=float, default=40, help="thickness of a real CT's slab (mm)")
    parser.add_argument("--phantom-shape", nargs=3, type=int, default=[38, 120, 120], metavar=("Z", "Y", "X"))
    parser.add_argument("--phantom-spacing", nargs=3, type=float, default=[2.5, 0.8, 0.8], metavar=("Z", "Y", "X"))
    parser.add_argument("--case-shape", nargs=3, type=int, default=[64, 64, 64], metavar=("Z", "Y", "X"),
                        help="voxels of the 1 mm training cases the planner sees (its patch follows)")  # fmt: skip
    parser.add_argument("--mirroring", nargs="+", default=["on"], choices=["off", "on"])
    parser.add_argument("--pairs", nargs="+", default=["in_memory", "files"], choices=["in_memory", "files"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--one", nargs=4, metavar=("KIND", "SIDE", "FOLDER", "SCAN"), help=argparse.SUPPRESS)
    parser.add_argument("--save", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.one:  # one measured run in its own process, so that nothing is warm and the peak is its own
        kind, side, folder, scan = args.one
        if kind == "in_memory":
            figures = run_in_memory(side, Path(folder), Path(scan), args.threads, args.save)
        else:
            figures = run_files(side, Path(folder), Path(scan))
        print(json.dumps(figures))
        return
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "in").mkdir()
        scan, described = write_scan(args.scan, args.slab_mm, args.phantom_shape, args.phantom_spacing, work / "in")
        result = {"scan": described, "weights": "untrained (nnU-Net's initialisation, one seed per fold)",
                  "folds": list(FOLDS), "device": "cpu", "repeats": args.repeats, "results": {}}  # fmt: skip
        for mirroring in args.mirroring:
            folder = build_folder(work / f"model_{mirroring}", args.case_shape, mirroring == "on")
            plans = json.loads((folder / "plans.json").read_text())["configurations"]["3d_fullres"]
            result["patch_size"], result["plan_spacing_mm"] = plans["patch_size"], plans["spacing"]
            result["results"][f"mirroring_{mirroring}"] = {
                kind: compare_pair(kind, folder, scan, args, work) for kind in args.pairs
            }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
