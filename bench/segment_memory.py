"""Peak memory of ``run_segmentation`` on a CT-like volume, now and at a baseline commit.

    python bench/segment_memory.py [--size 600 512 512] [--spacing 0.8 0.7 0.7]
                                   [--model brain-tissue-unet] [--baseline REV | --no-baseline]

The volume is built in the measuring process: int16, (z, y, x) = ``--size``, spacing in mm
(z, y, x) = ``--spacing``; air (-1000 HU) outside a head-sized ellipsoid of soft tissue
(about 40 HU, with noise) inside a 7 mm shell of bone (about 1000 HU). Each variant runs
``napari_medseg.export.run.run_segmentation`` (the job behind ``medseg segment``) in its own
child process on the CPU, writing into a temporary folder; the child reports its peak
resident memory and its resident memory after the imports and the model load, before the
volume exists (the runtime and the model). Where Linux allows resetting a process's peak
(``/proc/self/clear_refs``), the peak of each stage (prepare, network, OOD, fitting and
applying the post-processing, restoring, labels, writing) is reported too: the stage
functions are wrapped in the child, whichever commit it imports.

The baseline is the same function at an earlier commit, checked out in a temporary
``git worktree`` (removed afterwards; the working tree is not touched) and imported in
place of this checkout.

Prints JSON: per variant the peak RSS, the runtime+model RSS, the input bytes, the peak
beyond runtime+model in multiples of the input (issue 12 asks for at most 4), seconds,
and the label agreement with the current code.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from baseline_tree import baseline_worktree

REPO = Path(__file__).resolve().parents[1]
# The last commit before the probabilities were predicted into preallocated arrays,
# restored class by class and streamed to disk when they do not fit.
BASELINE = "245ffc3"


def ct_like_volume(size: tuple[int, int, int], spacing: tuple[float, float, float], seed: int = 0) -> np.ndarray:
    """(z, y, x) int16 HU: air, an ellipsoidal head (semi-axes 90, 100, 110 mm in z, y, x,
    cut to the field of view) of soft tissue with noise, a 7 mm shell of bone."""
    rng = np.random.default_rng(seed)
    volume = np.full(size, -1000, dtype=np.int16)
    semi = np.array([90.0, 100.0, 110.0])
    centre = (np.array(size) - 1) / 2 * np.array(spacing)
    z, y, x = (np.arange(n) * s - c for n, s, c in zip(size, spacing, centre))
    for k in range(size[0]):  # one slice at a time: the bench must not add its own peak
        r = np.sqrt((z[k] / semi[0]) ** 2 + (y[:, None] / semi[1]) ** 2 + (x[None, :] / semi[2]) ** 2)
        inside = r <= 1.0
        tissue = 40 + rng.normal(0, 15, size=inside.sum())
        plane = volume[k]
        plane[inside] = tissue.astype(np.int16)
        plane[inside & (r > 1.0 - 7.0 / semi.min())] = 1000
    return volume


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# (module, function, stage): wrapped in the child to measure each stage's own peak; the
# modules of earlier commits (before segment() left the inference engine) are listed too.
STAGES = (
    ("napari_medseg.inference.engine", "prepare_for_model", "prepare"),
    ("napari_medseg.inference.engine", "predict_probabilities", "network"),
    ("napari_medseg.inference.engine", "fit_postprocess", "fit_postprocess"),
    ("napari_medseg.inference.engine", "apply_in_slabs", "apply_postprocess"),
    ("napari_medseg.inference.engine", "restore_into", "restore"),
    ("napari_medseg.inference.engine", "argmax_labels", "labels"),
    ("napari_medseg.inference.segment", "prepare_for_model", "prepare"),
    ("napari_medseg.inference.segment", "predict_probabilities", "network"),
    ("napari_medseg.uncertainty.ood", "assess_ood", "ood"),
    ("napari_medseg.inference.segment", "find_brain", "locator"),
    ("napari_medseg.inference.segment", "fit_postprocess", "fit_postprocess"),
    ("napari_medseg.inference.segment", "apply_in_slabs", "apply_postprocess"),
    ("napari_medseg.inference.segment", "restore_into", "restore"),
    ("napari_medseg.inference.segment", "argmax_labels", "labels"),
    ("napari_medseg.io", "write_volume", "write"),
    ("napari_medseg.export.report", "build_report", "report"),
    ("napari_medseg.report", "build_report", "report"),
)
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _peak_bytes() -> int:
    """This process's peak resident memory since start or the last :func:`_reset_peak`."""
    if _STATUS.exists():
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak() -> bool:
    """Reset the peak to the current resident memory (Linux); False where not allowed."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


class StagePeaks:
    """Peak resident bytes per stage, and the resident bytes when it started (what earlier
    stages left); ``between`` is the peak outside every stage."""

    def __init__(self) -> None:
        self.peaks: dict[str, int] = {}
        self.starts: dict[str, int] = {}
        self.between = 0

    def wrap(self, function, stage: str):
        def wrapped(*args, **kwargs):
            name = stage
            if stage == "write":  # labels and probabilities go through the same writer
                name = f"write_{kwargs.get('kind', 'auto')}"
            self.between = max(self.between, _peak_bytes())
            self.starts[name] = max(self.starts.get(name, 0), _rss_bytes())
            _reset_peak()
            try:
                return function(*args, **kwargs)
            finally:
                self.peaks[name] = max(self.peaks.get(name, 0), _peak_bytes())
                _reset_peak()

        wrapped.medseg_stage = stage  # not wrapped twice
        return wrapped

    def install(self) -> None:
        """Wrap each stage function that the imported commit has."""
        import importlib

        for module_name, attribute, stage in STAGES:
            try:
                module = importlib.import_module(module_name)
            except ImportError:  # a module of another commit
                continue
            if hasattr(module, attribute) and not hasattr(getattr(module, attribute), "medseg_stage"):
                setattr(module, attribute, self.wrap(getattr(module, attribute), stage))


def child(size, spacing, model_name: str, labels_out: str | None) -> dict:
    """Runs in the child process: imports, model, volume, run_segmentation; returns figures."""
    import torch

    import napari_medseg
    from napari_medseg.io import read_volume
    from napari_medseg.models import load_model
    from napari_medseg.types import Geometry, Volume

    try:
        from napari_medseg.export.run import run_segmentation
    except ImportError:  # a commit before the headless job moved to export/
        from napari_medseg.pipeline import run_segmentation

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    model = load_model(model_name, device="cpu")
    runtime_model = _rss_bytes()
    stages = StagePeaks() if _reset_peak() else None
    if stages is not None:
        stages.install()
    array = ct_like_volume(size, spacing)
    volume = Volume(array=array, geometry=Geometry(tuple(spacing), (0.0, 0.0, 0.0)), modality="CT")
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        paths = run_segmentation(volume, model, folder, "ct", device="cpu", postprocessing=True)
        seconds = time.perf_counter() - start
        peak = _peak_bytes()
        if stages is not None:
            peak = max(peak, stages.between, *stages.peaks.values())
        if labels_out:
            np.save(labels_out, read_volume(paths["seg"]).array)
    figures = {
        "code": str(Path(napari_medseg.__file__).parents[1]),
        "peak_rss_bytes": peak,
        "runtime_model_rss_bytes": runtime_model,
        "input_bytes": int(array.nbytes),
        "peak_over_runtime_model_in_inputs": round((peak - runtime_model) / array.nbytes, 2),
        "peak_in_inputs": round(peak / array.nbytes, 2),
        "seconds": round(seconds, 1),
    }
    if stages is not None:
        stages.peaks["between_stages"] = stages.between
        for key, values in (("stage_peak", stages.peaks), ("stage_start", stages.starts)):
            figures[f"{key}_over_runtime_model_in_inputs"] = {
                stage: round((value - runtime_model) / array.nbytes, 2) for stage, value in values.items()
            }
    return figures


def run_child(tree: Path, args, labels_out: Path) -> dict:
    """This script's child mode with ``tree``'s package first on the import path."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--model", args.model,
               "--size", *map(str, args.size), "--spacing", *map(str, args.spacing), "--labels-out", str(labels_out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tree)
    if done.returncode != 0:
        raise RuntimeError(f"segmentation in {tree} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=(600, 512, 512), help="z y x voxels")
    parser.add_argument("--spacing", type=float, nargs=3, default=(0.8, 0.7, 0.7), help="z y x mm")
    parser.add_argument("--model", default="brain-tissue-unet")
    parser.add_argument("--baseline", default=BASELINE, help="commit to compare with")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--labels-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(tuple(args.size), tuple(args.spacing), args.model, args.labels_out)))
        return
    results = {"size_zyx": list(args.size), "spacing_zyx_mm": list(args.spacing), "model": args.model}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        results["current"] = run_child(REPO, args, scratch / "current.npy")
        if not args.no_baseline:
            with baseline_worktree(args.baseline, scratch) as tree:
                results["baseline"] = {"revision": args.baseline, **run_child(tree, args, scratch / "baseline.npy")}
            same = np.load(scratch / "current.npy") == np.load(scratch / "baseline.npy")
            results["label_agreement_with_baseline"] = float(same.mean())
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
