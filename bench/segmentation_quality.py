"""Accuracy of the shipped brain-tissue models on data never used in training.

    python bench/segmentation_quality.py [--models brain-tissue-unet brain-tissue-transunet]

Reports, as JSON:
- dev subject (``shared/data/dev-subject``, an oblique Philips T1, skull-stripped): Dice
  per class against the FSL FAST reference, for each model with and without its
  post-processing, beside a classical baseline run in the same process: a 3-class
  Gaussian mixture on intensities inside the reference brain mask (which the models do
  not get to see);
- full-head template (``shared/data/full-head-template``, MNI avg152, 2 mm, whole head):
  the share of predicted tissue lying more than 3 mm outside the brain mask (target ≤ 5%);
- full-head MPRAGE (``shared/data/full-head-mprage``, a sagittal DICOM series with face
  and neck): GM and WM volumes (adult-plausible: GM 450–850 mL, WM 350–700 mL) and the
  share of GM+WM in its largest connected piece (target ≥ 97%).
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
CLASSES = ("CSF", "grey matter", "white matter")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return float(2 * np.logical_and(a, b).sum() / total) if total else float("nan")


def dice_table(labels: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    scores = {name: round(dice(labels == k, reference == k), 4) for k, name in enumerate(CLASSES, start=1)}
    scores["mean"] = round(float(np.mean([scores[name] for name in CLASSES])), 4)
    return scores


def gmm_baseline(image: np.ndarray, mask: np.ndarray, iterations: int = 50) -> np.ndarray:
    """3-class 1D Gaussian mixture on intensities inside ``mask``, initialised at terciles."""
    values = image[mask].astype(np.float64)
    means = np.percentile(values, [15, 50, 85])
    variances = np.full(3, values.var() / 9)
    weights = np.full(3, 1 / 3)
    for _ in range(iterations):
        log_p = np.log(weights)[:, None] - 0.5 * ((values[None] - means[:, None]) ** 2 / variances[:, None] + np.log(variances)[:, None])
        log_p -= log_p.max(axis=0)
        r = np.exp(log_p)
        r /= r.sum(axis=0)
        n = r.sum(axis=1)
        weights = n / n.sum()
        means = (r @ values) / n
        variances = np.maximum((r * (values[None] - means[:, None]) ** 2).sum(axis=1) / n, 1e-6)
    order = np.argsort(means)  # T1: CSF < GM < WM
    labels = np.zeros(image.shape, np.uint8)
    labels[mask] = np.argsort(order)[np.argmax(r, axis=0)] + 1
    return labels


def evaluate_model(name: str, read_volume, load_model, segment) -> dict:
    model = load_model(name, device="cpu")
    result: dict = {"model": name, "architecture": model.config.architecture}
    t1 = read_volume(SHARED / "dev-subject" / "t1.nii.gz")
    reference = read_volume(SHARED / "dev-subject" / "tissue_labels.nii.gz").array
    for post in (True, False):
        start = time.perf_counter()
        seg = segment(t1, model, device="cpu", postprocessing=post)
        key = "dev_subject" if post else "dev_subject_network_only"
        result[key] = {"dice": dice_table(seg.labels, reference), "seconds": round(time.perf_counter() - start, 1)}

    template = read_volume(SHARED / "full-head-template" / "t1.nii.gz")
    brain = read_volume(SHARED / "full-head-template" / "brainmask.nii.gz").array > 0
    seg = segment(template, model, device="cpu")
    outside_mm = ndimage.distance_transform_edt(~brain, sampling=template.spacing)
    tissue = seg.labels > 0
    result["full_head_template"] = {
        "tissue_outside_3mm_fraction": round(float((tissue & (outside_mm > 3)).sum() / max(tissue.sum(), 1)), 4),
        "tissue_ml": round(float(tissue.sum() * template.geometry.voxel_volume_ml()), 1),
    }

    mprage = read_volume(SHARED / "full-head-mprage")
    seg = segment(mprage, model, device="cpu")
    voxel_ml = mprage.geometry.voxel_volume_ml()
    gm_wm = (seg.labels == 2) | (seg.labels == 3)
    components, count = ndimage.label(gm_wm, structure=np.ones((3, 3, 3)))
    largest = np.bincount(components.ravel())[1:].max() if count else 0
    result["full_head_mprage"] = {
        "volume_ml": {name: round(float((seg.labels == k).sum() * voxel_ml), 1) for k, name in enumerate(CLASSES, 1)},
        "gm_wm_largest_component_fraction": round(float(largest / max(gm_wm.sum(), 1)), 4),
        "seconds": round(seg.timings["total"], 1),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["brain-tissue-unet", "brain-tissue-transunet"])
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"shared validation data not found at {SHARED}")
    from napari_medseg.inference import segment
    from napari_medseg.io import read_volume
    from napari_medseg.models import load_model

    t1 = read_volume(SHARED / "dev-subject" / "t1.nii.gz")
    reference = read_volume(SHARED / "dev-subject" / "tissue_labels.nii.gz").array
    report = {
        "baseline_gmm_in_reference_mask": {"dev_subject": {"dice": dice_table(gmm_baseline(t1.array.astype(np.float32), reference > 0), reference)}},
        "models": [evaluate_model(name, read_volume, load_model, segment) for name in args.models],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
