"""Whole-volume inference speed of the default U-Net, side by side in one run.

    python bench/inference.py [--model brain-tissue-unet] [--repeats 3]

On the dev subject (``shared/data/dev-subject/t1.nii.gz``), with the same network and
the same preprocessed input (model grid, normalised), it times:

- ``engine``: ``napari_medseg.inference.predict_slices`` (batched 2.5D slices,
  ``torch.inference_mode``, bf16 autocast where the CPU has bf16 units);
- ``naive``: one slice at a time, fp32, ``torch.no_grad``;
- ``monai``: MONAI's ``sliding_window_inference`` over the stack of 2.5D slices with one
  window per whole slice (so labels can be identical) and the same batch size and
  autocast as the engine;
- ``monai_patch``: MONAI as usually configured for this model (window = training patch
  176x208, overlap 0.25, Gaussian blending), for reference;
- ``pipeline``: the whole ``segment()`` call (reorientation, normalisation, network,
  post-processing, mapping back).

Each method runs in its own process so that its peak resident memory is its own. Prints
JSON: wall seconds (median of repeats), input voxels per second, peak RSS, ratios to the
engine, and the fraction of voxels whose labels agree with the engine's.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEV_T1 = REPO.parent / "shared" / "data" / "dev-subject" / "t1.nii.gz"
METHODS = ("engine", "naive", "monai", "monai_patch", "pipeline")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_method(method: str, model_name: str, repeats: int, batch: int, labels_out: Path) -> dict:
    import torch

    from napari_medseg.inference import autocast_dtype, segment
    from napari_medseg.inference.engine import predict_slices
    from napari_medseg.inference.tiling import context_stack
    from napari_medseg.io import read_volume
    from napari_medseg.models import load_model
    from napari_medseg.preprocess import prepare_for_model

    torch.set_num_threads(torch.get_num_threads())
    model = load_model(model_name, device="cpu").eval()
    config = model.config
    volume = read_volume(DEV_T1)
    prepared = prepare_for_model(volume, config)
    image = prepared.image
    offsets = config.context_offsets
    device = torch.device("cpu")
    amp = autocast_dtype(device, "auto")

    def engine():
        return predict_slices(model, image, offsets=offsets, batch_size=batch, device=device, amp=amp).argmax(0)

    def naive():
        volume_t = torch.from_numpy(image)
        labels = np.empty(image.shape, np.uint8)
        with torch.no_grad():
            for k in range(image.shape[0]):
                x = context_stack(volume_t, torch.tensor([k]), offsets)
                labels[k] = model(x).argmax(1)[0].numpy()
        return labels

    def monai_run(roi, overlap, mode):
        from monai.inferers import sliding_window_inference

        stacks = context_stack(torch.from_numpy(image), torch.arange(image.shape[0]), offsets)
        with torch.inference_mode(), torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
            logits = sliding_window_inference(stacks, roi_size=roi, sw_batch_size=batch, predictor=model, overlap=overlap, mode=mode)
        return torch.softmax(logits.float(), 1).argmax(1).numpy()

    def pipeline():
        return segment(volume, model, device="cpu").labels

    run = {
        "engine": engine,
        "naive": naive,
        "monai": lambda: monai_run(tuple(image.shape[1:]), 0.0, "constant"),
        "monai_patch": lambda: monai_run(tuple(config.patch_size), 0.25, "gaussian"),
        "pipeline": pipeline,
    }[method]
    times = []
    labels = None
    for _ in range(repeats):
        start = time.perf_counter()
        labels = run()
        times.append(time.perf_counter() - start)
    np.save(labels_out, np.asarray(labels, dtype=np.uint8))
    seconds = statistics.median(times)
    return {
        "method": method,
        "seconds": round(seconds, 3),
        "all_seconds": [round(t, 3) for t in times],
        "voxels_per_second": round(volume.array.size / seconds),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "precision": "fp32" if method == "naive" else (str(amp).replace("torch.", "") if amp else "fp32"),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="brain-tissue-unet")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--labels-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        print(json.dumps(run_method(args.method, args.model, args.repeats, args.batch, args.labels_out)))
        return
    if not DEV_T1.is_file():
        sys.exit(f"dev subject not found at {DEV_T1}")
    import tempfile

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in METHODS:
            out = Path(tmp) / f"{method}.npy"
            command = [sys.executable, __file__, "--method", method, "--model", args.model, "--repeats", str(args.repeats),
                       "--batch", str(args.batch), "--labels-out", str(out)]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            results[method] = json.loads(done.stdout.strip().splitlines()[-1])
            results[method]["labels"] = np.load(out)
        reference = results["engine"]["labels"]
        for method, row in results.items():
            labels = row.pop("labels")
            row["label_agreement_with_engine"] = round(float((labels == reference).mean()), 6) if labels.shape == reference.shape else None
            row["seconds_ratio_to_engine"] = round(row["seconds"] / results["engine"]["seconds"], 2)
    print(json.dumps({"model": args.model, "input": str(DEV_T1.name), "results": results}, indent=2))


if __name__ == "__main__":
    main()
