"""Accuracy of the shipped brain models on data never used in training.

    python bench/segmentation_quality.py [--models brain-tissue-unet brain-tissue-transunet brain-structures]

A structure model (classes named as in SynthSeg's set) is scored on the tissue classes
merged from its structures (:data:`napari_medseg.training.label_maps.TISSUE_OF_STRUCTURE`).

Reports, as JSON:
- dev subject (``shared/data/dev-subject``, an oblique Philips T1, skull-stripped): Dice
  per class against the FSL FAST reference, for each model with and without its
  post-processing, beside a classical baseline run in the same process: a 3-class
  Gaussian mixture on intensities inside the reference brain mask (which the models do
  not get to see);
- full-head template (``shared/data/full-head-template``, MNI avg152, 2 mm, whole head):
  the share of predicted tissue lying more than 3 mm outside the brain mask (target ≤ 3%),
  with and without post-processing;
- full-head MPRAGE (``shared/data/full-head-mprage``, a sagittal DICOM series with face
  and neck): GM and WM volumes (adult-plausible: GM 450–850 mL, WM 350–700 mL) and the
  share of GM+WM in its largest connected piece (target ≥ 97%).

A bundle that offers a refinement on request (``medseg segment --refine``) is also scored
with it (keys ending ``_refined``).
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
#: Adult range of a structure's volume: the 20 training anatomies' range, 25% wider each way.
ADULT_RANGE_SLACK = 0.25


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


def tissue_labels(labels: np.ndarray, class_names: tuple[str, ...]) -> np.ndarray:
    """Tissue labels (0 background, 1 CSF, 2 GM, 3 WM) of a tissue or structure segmentation."""
    from napari_medseg.training.label_maps import STRUCTURES, TISSUE_NAMES, TISSUE_OF_STRUCTURE

    if tuple(class_names) == TISSUE_NAMES:
        return labels
    if tuple(class_names) == tuple(s[1] for s in STRUCTURES):
        return TISSUE_OF_STRUCTURE[labels]
    raise SystemExit(f"classes {class_names} are neither tissue nor SynthSeg structures")


def evaluate_model(name: str, read_volume, load_model, segment) -> dict:
    """Every scan with the model's default (post-processing on), its network alone
    (``_network_only``) and, when the bundle offers one, its refinement (``_refined``)."""
    from napari_medseg.postprocess import PostprocessSettings

    model = load_model(name, device="cpu")
    result: dict = {"model": name, "architecture": model.config.architecture}
    variants = {"": {}, "_network_only": {"postprocessing": False}}
    if PostprocessSettings.refinement_offered(model.config):
        variants["_refined"] = {"refine": True}
    scans = {
        "dev_subject": (read_volume(SHARED / "dev-subject" / "t1.nii.gz"), dev_scores(read_volume, model.config)),
        "full_head_template": (read_volume(SHARED / "full-head-template" / "t1.nii.gz"), template_scores(read_volume)),
        "full_head_mprage": (read_volume(SHARED / "full-head-mprage"), mprage_scores(model.config)),
    }
    for scan, (volume, score) in scans.items():
        for suffix, options in variants.items():
            if scan == "full_head_mprage" and suffix == "_network_only":
                continue
            start = time.perf_counter()
            seg = segment(volume, model, device="cpu", **options)
            result[scan + suffix] = {**score(seg, volume), "seconds": round(time.perf_counter() - start, 1)}
    return result


def dev_scores(read_volume, config):
    """Scores on the dev subject: tissue Dice against FAST, structure volumes."""
    reference = read_volume(SHARED / "dev-subject" / "tissue_labels.nii.gz").array
    names = tuple(config.class_names)

    def score(seg, volume) -> dict:
        dice = dice_table(tissue_labels(seg.labels, names), reference)
        return {"dice": dice, **structure_volumes(seg.labels, config, volume.geometry.voxel_volume_ml())}

    return score


def template_scores(read_volume):
    """Scores on the MNI head: the share of tissue more than 3 mm outside the brain mask."""
    template = read_volume(SHARED / "full-head-template" / "t1.nii.gz")
    brain = read_volume(SHARED / "full-head-template" / "brainmask.nii.gz").array > 0
    outside_mm = ndimage.distance_transform_edt(~brain, sampling=template.spacing)

    def score(seg, volume) -> dict:
        tissue = seg.labels > 0
        return {
            "tissue_outside_3mm_fraction": round(float((tissue & (outside_mm > 3)).sum() / max(tissue.sum(), 1)), 4),
            "tissue_ml": round(float(tissue.sum() * volume.geometry.voxel_volume_ml()), 1),
        }

    return score


def mprage_scores(config):
    """Scores on the MPRAGE head: tissue and structure volumes, GM+WM in one piece."""
    names = tuple(config.class_names)

    def score(seg, volume) -> dict:
        voxel_ml = volume.geometry.voxel_volume_ml()
        labels = tissue_labels(seg.labels, names)
        gm_wm = (labels == 2) | (labels == 3)
        components, count = ndimage.label(gm_wm, structure=np.ones((3, 3, 3)))
        largest = np.bincount(components.ravel())[1:].max() if count else 0
        return {
            "volume_ml": {name: round(float((labels == k).sum() * voxel_ml), 1) for k, name in enumerate(CLASSES, 1)},
            "gm_wm_largest_component_fraction": round(float(largest / max(gm_wm.sum(), 1)), 4),
            **structure_volumes(seg.labels, config, voxel_ml),
        }

    return score


def structure_volumes(labels: np.ndarray, config, voxel_ml: float) -> dict:
    """A structure model's volume (mL) per structure and those outside the adult range:
    the range of the 20 training anatomies (``extra["expected_volume_ml"]``) widened by
    ``ADULT_RANGE_SLACK`` each way. Empty for tissue models."""
    if "left hippocampus" not in config.class_names:
        return {}
    counts = np.bincount(labels.ravel(), minlength=config.num_classes)
    volumes = {name: round(float(counts[k] * voxel_ml), 2) for k, name in enumerate(config.class_names) if k}
    ranges = config.extra.get("expected_volume_ml", {})
    outside = {
        name: [volume, [round(lo * (1 - ADULT_RANGE_SLACK), 2), round(hi * (1 + ADULT_RANGE_SLACK), 2)]]
        for name, volume in volumes.items() if name in ranges
        for lo, hi in [ranges[name]] if not lo * (1 - ADULT_RANGE_SLACK) <= volume <= hi * (1 + ADULT_RANGE_SLACK)
    }  # fmt: skip
    return {"structure_volumes_ml": volumes, "outside_adult_range": outside}


def evaluate_locator(model_name: str, read_volume, load_model) -> dict:
    """The brain locator of ``model_name`` alone: brain Dice on the MNI head (its brain
    mask, which leaves the outer CSF out), brain volume (mL, CSF included) on every scan."""
    from napari_medseg.inference.locator import LocatorSettings, locate_brain, locator_of
    from napari_medseg.preprocess import prepare

    model = load_model(model_name, device="cpu")
    settings = LocatorSettings.from_config(model.config)
    if settings is None:
        return {}
    tight = LocatorSettings(settings.bundle, settings.threshold, 0.0, 0.0)
    result: dict = {"bundle": settings.bundle}
    scans = {
        "full_head_template": SHARED / "full-head-template" / "t1.nii.gz",
        "full_head_mprage": SHARED / "full-head-mprage",
        "dev_subject": SHARED / "dev-subject" / "t1.nii.gz",
        "sample_head": SHARED / "sample-head" / "t1.nii.gz",
    }
    for key, path in scans.items():
        volume = read_volume(path)
        prepared = prepare(volume, orientation=model.config.canonical_orientation, spacing=model.config.target_spacing)
        start = time.perf_counter()
        mask, details = locate_brain(locator_of(model), prepared.image, prepared.geometry, tight)
        entry = {"brain_ml": details["brain_ml"], "seconds": round(time.perf_counter() - start, 2)}
        if key == "full_head_template":
            reference = read_volume(SHARED / "full-head-template" / "brainmask.nii.gz")
            ref = prepare(reference, orientation=model.config.canonical_orientation,
                          spacing=model.config.target_spacing, normalize=False).image > 0.5  # fmt: skip
            outside_mm = ndimage.distance_transform_edt(~ref, sampling=prepared.geometry.spacing)
            entry["dice"] = round(dice(mask, ref), 4)
            entry["outside_4mm_fraction"] = round(float((mask & (outside_mm > 4)).sum() / max(mask.sum(), 1)), 4)
        if key == "dev_subject":
            reference = read_volume(SHARED / "dev-subject" / "tissue_labels.nii.gz")
            ref = prepare(reference, orientation=model.config.canonical_orientation,
                          spacing=model.config.target_spacing, normalize=False).image > 0.5  # fmt: skip
            entry["dice"] = round(dice(mask, ref), 4)
        result[key] = entry
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["brain-tissue-unet", "brain-tissue-transunet"])
    parser.add_argument("--locator-only", action="store_true", help="only the first model's brain locator")
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"shared validation data not found at {SHARED}")
    from napari_medseg.inference import segment
    from napari_medseg.io import read_volume
    from napari_medseg.models import load_model

    t1 = read_volume(SHARED / "dev-subject" / "t1.nii.gz")
    reference = read_volume(SHARED / "dev-subject" / "tissue_labels.nii.gz").array
    if args.locator_only:
        print(json.dumps(evaluate_locator(args.models[0], read_volume, load_model), indent=2))
        return
    report = {
        "baseline_gmm_in_reference_mask": {"dev_subject": {"dice": dice_table(gmm_baseline(t1.array.astype(np.float32), reference > 0), reference)}},
        "locator": evaluate_locator(args.models[0], read_volume, load_model),
        "models": [evaluate_model(name, read_volume, load_model, segment) for name in args.models],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
