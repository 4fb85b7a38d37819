"""Per-structure Dice of structure models on images synthesised from the 20 label maps.

    python bench/structures_synthetic.py [--models brain-structures OTHER_BUNDLE] [--batches 16] [--seed 7]

The project has no real scan labelled with FreeSurfer's aseg, so this is the only
per-structure check available here: fresh synthetic 2.5D stacks (the synthesis of
:mod:`napari_medseg.training.label_synth`, a seed no training run used) of the training
anatomies, scored structure by structure. It compares weights side by side on identical
inputs (every model sees the same stacks), once with T1-like contrasts and once with random
ones; it says nothing about anatomies never seen, and synthetic images are easier than real
ones (real partial volume, real noise). Dice is pooled over all stacks (intersections and
sizes summed), so rare structures are not averaged from a few slices.

Prints JSON: per model and contrast, every structure's Dice, their mean, and the tissue
classes merged from the structures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
MAPS = REPO.parent / "shared" / "data" / "synthseg-label-maps"


def synthetic_stacks(maps, config, batches: int, batch: int, seed: int, t1_fraction: float):
    """``batches`` (image (B, C, H, W), structures (B, H, W)) pairs from the label ``maps``,
    in the input the bundle ``config`` was trained on (its patch and slice offsets)."""
    from napari_medseg.training.label_synth import LabelSynthesizer, SynthSettings

    synthesizer = LabelSynthesizer(maps, SynthSettings(p_t1_contrast=t1_fraction), seed=seed)
    patch, offsets = tuple(config.patch_size), tuple(config.extra["context_offsets_mm"])
    return [synthesizer.slabs(batch, patch=patch, offsets_mm=offsets, target="structures") for _ in range(batches)]


def pooled_dice(counts: np.ndarray) -> np.ndarray:
    """(K,) Dice from (K, 3) summed [intersection, predicted, reference] voxel counts."""
    total = counts[:, 1] + counts[:, 2]
    return np.where(total > 0, 2 * counts[:, 0] / np.maximum(total, 1), np.nan)


def score(model, stacks, merge: np.ndarray | None = None) -> np.ndarray:
    """(K, 3) counts of the model's argmax against the targets, optionally merged by ``merge``."""
    from napari_medseg.inference import autocast_dtype

    amp = autocast_dtype(torch.device("cpu"), "auto")
    classes = model.config.num_classes if merge is None else int(merge.max()) + 1
    counts = np.zeros((classes, 3), np.int64)
    with torch.inference_mode(), torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
        for image, target in stacks:
            predicted = model(image).argmax(dim=1).numpy()
            reference = target.numpy()
            if merge is not None:
                predicted, reference = merge[predicted], merge[reference]
            for k in range(classes):
                p, r = predicted == k, reference == k
                counts[k] += (int((p & r).sum()), int(p.sum()), int(r.sum()))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["brain-structures"], help="bundle names or folders")
    parser.add_argument("--batches", type=int, default=16, help="batches of 8 stacks per contrast")
    parser.add_argument("--seed", type=int, default=7, help="synthesis seed (training runs used 0 and 1)")
    args = parser.parse_args()
    from napari_medseg.models import load_model
    from napari_medseg.training.label_maps import STRUCTURES, TISSUE_NAMES, TISSUE_OF_STRUCTURE, load_label_maps

    names = [s[1] for s in STRUCTURES]
    torch.set_num_threads(2)
    results: dict = {"batches": args.batches, "stacks_per_contrast": args.batches * 8, "seed": args.seed, "models": {}}
    contrasts = {"t1_like": 1.0, "any_contrast": 0.0}
    maps = load_label_maps(MAPS)
    config = load_model(args.models[0], device="cpu").config  # every model is scored on the same stacks
    stacks = {key: synthetic_stacks(maps, config, args.batches, 8, args.seed, fraction) for key, fraction in contrasts.items()}
    del maps
    for name in args.models:
        model = load_model(name, device="cpu").eval()
        if list(model.config.class_names) != names:
            raise SystemExit(f"{name}: classes {list(model.config.class_names)[:4]}... are not SynthSeg's structures")
        entry = {}
        for key in contrasts:
            structure = pooled_dice(score(model, stacks[key]))
            tissue = pooled_dice(score(model, stacks[key], merge=TISSUE_OF_STRUCTURE))
            entry[key] = {
                "dice": {n: round(float(d), 3) for n, d in zip(names[1:], structure[1:])},
                "mean_dice": round(float(np.nanmean(structure[1:])), 4),
                "tissue_dice": {n: round(float(d), 3) for n, d in zip(TISSUE_NAMES[1:], tissue[1:])},
            }
        results["models"][name] = entry
        print(f"{name}: " + ", ".join(f"{k} mean {v['mean_dice']}" for k, v in entry.items()), file=sys.stderr)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
