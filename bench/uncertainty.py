"""Do the uncertainty maps flag errors, are the probabilities calibrated, what does MC dropout cost?

    python bench/uncertainty.py [--samples 10] [--samplers mc-dropout tta ensemble mc-dropout-fine] [--transunet PATH]

Needs the shipped bundles ``brain-tissue-unet`` and ``brain-tissue-transunet`` and the dev
subject (``shared/data/dev-subject``: ``t1.nii.gz`` and the FSL FAST reference
``tissue_labels.nii.gz``; never used in training). Reports, as JSON, for each sampler
(MC dropout and TTA with the U-Net, the ensemble of both bundles, or of the U-Net and the
bundle at ``--transunet``, and MC dropout restricted to the finest decoder level as a
cheaper variant):

- ``auroc_total`` (also aleatoric and epistemic): area under the ROC curve of the per-voxel
  uncertainty as a detector of "this voxel is misclassified" (labels = arg-max of the mean
  probabilities), inside the reference brain mask dilated by 3 voxels; computed from rank
  statistics (Mann-Whitney U, ties averaged). Target >= 0.85. Samples go through the
  bundle's post-processing (what users see; labels = ``segment``'s); the same figures for
  the network's own samples are under ``network_only``. ``--refine``: the post-processing
  includes the bundles' refinement kept on request (``medseg segment --refine``).
- ``ece``: expected calibration error of the mean probabilities in the same mask, 15
  equal-width bins of the max-probability confidence.
- the OOD score and the seconds taken.

And ``cost``: wall seconds of one plain pass (``segment``) and of S MC-dropout samples
(``estimate_uncertainty``) over the whole volume in the same run, both with post-processing,
their ratio end to end and for the network part alone (target <= 4x).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
MODELS = ("brain-tissue-unet", "brain-tissue-transunet")
SAMPLERS = ("mc-dropout", "tta", "ensemble", "mc-dropout-fine")


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counting one half."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positives = np.asarray(positives, dtype=bool).ravel()
    n_pos = int(positives.sum())
    n_neg = positives.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
    ranks = np.empty(scores.size, dtype=np.float64)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)  # 1-based average ranks
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE of (N, K) probabilities against (N,) labels, max-probability confidence."""
    confidence = probabilities.max(axis=1).astype(np.float64)
    correct = (probabilities.argmax(axis=1) == labels).astype(np.float64)
    index = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins)
    gap = np.abs(np.bincount(index, correct, bins) - np.bincount(index, confidence, bins))
    return float(gap.sum() / max(counts.sum(), 1))


def quality(result, reference: np.ndarray, mask: np.ndarray) -> dict:
    labels = result.labels[mask]
    wrong = labels != reference[mask]
    return {
        "auroc_total": round(auroc(result.total[mask], wrong), 4),
        "auroc_aleatoric": round(auroc(result.aleatoric[mask], wrong), 4),
        "auroc_epistemic": round(auroc(result.epistemic[mask], wrong), 4),
        "ece": round(expected_calibration_error(result.mean_probabilities[mask], reference[mask]), 4),
        "error_rate": round(float(wrong.mean()), 4),
        "mean_total_nats": round(float(result.total[mask].mean()), 4),
        "ood": result.ood.as_dict(),
        "seconds": round(result.timings["total"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--samplers", nargs="+", choices=SAMPLERS, default=list(SAMPLERS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--refine", action="store_true",
                        help="post-process with the bundles' refinement kept on request (medseg segment --refine)")
    parser.add_argument("--transunet", help="the ensemble's second bundle, name or path (default: the shipped TransUNet)")
    args = parser.parse_args()
    t1, reference, mask, unet, transunet = load_inputs(args)
    from napari_medseg.inference import segment
    from napari_medseg.types import Volume

    # warm-up (kernel selection, lazy imports) on a few slices, outside every timing
    crop = Volume(t1.array[60:72].copy(), t1.geometry)
    for model in (unet, transunet):
        segment(crop, model, device=args.device, postprocessing=False)

    report: dict = {"volume": list(t1.shape), "mask_voxels": int(mask.sum()), "samples": args.samples,
                    "refine": args.refine, "transunet": args.transunet or MODELS[1], "samplers": {}}  # fmt: skip
    plain, plain_post_seconds = plain_figures(report, t1, reference, mask, unet, args)
    for name in args.samplers:
        entry = {}
        for postprocessing in (True, False):
            start = time.perf_counter()
            result = draw_samples(name, postprocessing, t1, unet, transunet, args)
            seconds = time.perf_counter() - start
            measured = quality(result, reference, mask)
            measured["seconds"] = round(seconds, 1)
            if not postprocessing:
                entry["network_only"] = measured
                continue
            entry.update(measured)
            if name == "mc-dropout":
                report["cost"] = {
                    "plain_seconds": round(plain_post_seconds, 1),
                    "mc_seconds": round(seconds, 1),
                    "ratio": round(seconds / plain_post_seconds, 2),
                    "network_ratio": round(result.timings["sampling"] / plain.timings["network"], 2),
                    "target": "<= 4",
                }
        report["samplers"][name] = entry
        print(f"{name}: {json.dumps(entry)}", file=sys.stderr, flush=True)
    print(json.dumps(report, indent=2))


def load_inputs(args: argparse.Namespace):
    """The dev subject's T1, its reference labels, the scored mask and the two networks."""
    from napari_medseg.models import list_bundles

    shipped = {info.name: info.path for info in list_bundles() if info.shipped}
    needed = MODELS if args.transunet is None else MODELS[:1]
    missing = [name for name in needed if name not in shipped]
    if missing:
        sys.exit(f"shipped bundles {missing} not found in resources/models; train them first (scripts/train_brain.py)")
    if not (SHARED / "dev-subject" / "t1.nii.gz").is_file():
        sys.exit(f"dev subject not found under {SHARED}")

    from napari_medseg.io import read_volume
    from napari_medseg.models import load_model

    t1 = read_volume(SHARED / "dev-subject" / "t1.nii.gz")
    reference = read_volume(SHARED / "dev-subject" / "tissue_labels.nii.gz").array.astype(np.int64)
    mask = ndimage.binary_dilation(reference > 0, ndimage.generate_binary_structure(3, 1), iterations=3)
    unet = load_model(shipped[MODELS[0]], device=args.device)
    transunet = load_model(args.transunet or shipped[MODELS[1]], device=args.device)
    return t1, reference, mask, unet, transunet


def plain_figures(report: dict, t1, reference: np.ndarray, mask: np.ndarray, unet, args: argparse.Namespace):
    """One plain U-Net pass without and with post-processing, into ``report``.

    Returns the pass without post-processing and the seconds of the one with it.
    """
    from napari_medseg.inference import segment

    start = time.perf_counter()
    plain = segment(t1, unet, device=args.device, postprocessing=False)
    plain_seconds = time.perf_counter() - start
    wrong = plain.labels[mask] != reference[mask]
    entropy = -(plain.probabilities * np.log(np.clip(plain.probabilities, 1e-12, None))).sum(-1)
    report["plain_unet"] = {
        "error_rate": round(float(wrong.mean()), 4),
        "ece": round(expected_calibration_error(plain.probabilities[mask], reference[mask]), 4),
        "auroc_entropy": round(auroc(entropy[mask], wrong), 4),
        "seconds": round(plain_seconds, 1),
    }
    start = time.perf_counter()
    plain_post = segment(t1, unet, device=args.device, refine=args.refine)
    plain_post_seconds = time.perf_counter() - start
    wrong = plain_post.labels[mask] != reference[mask]
    report["plain_unet_postprocessed"] = {"error_rate": round(float(wrong.mean()), 4), "seconds": round(plain_post_seconds, 1)}
    return plain, plain_post_seconds


def draw_samples(name: str, postprocessing: bool, t1, unet, transunet, args: argparse.Namespace):
    """The uncertainty estimate of sampler ``name`` on the dev subject."""
    from napari_medseg.uncertainty import estimate_uncertainty

    options = {"device": args.device, "postprocessing": postprocessing, "refine": args.refine}
    if name == "ensemble":
        return estimate_uncertainty(t1, [unet, transunet], method="ensemble", **options)
    if name == "mc-dropout-fine":
        fine = {"sites": (f"decoder.levels.{len(unet.decoder.levels) - 1}",)}
        return estimate_uncertainty(t1, unet, method="mc-dropout", samples=args.samples, sampler_options=fine, **options)
    return estimate_uncertainty(t1, unet, method=name, samples=args.samples, **options)


if __name__ == "__main__":
    main()
