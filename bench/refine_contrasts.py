"""The structure bundle with and without its refinement on T1-like and T2-like heads.

    python bench/refine_contrasts.py [--maps 3 17] [--model brain-structures] [--seed 0]

The project has no real T2 scan with structure labels, so this renders whole SynthSeg label
maps (``shared/data/synthseg-label-maps``, the anatomies the structure network was trained
on) with one fixed contrast each: a T1-like one (white matter bright, CSF dark, deep grey
nuclei between grey and white matter) and a T2-like one (the brain's levels inverted: CSF
bright, white matter dark), non-brain labels at random levels, a 0.8 mm Gaussian blur and
noise. ``segment`` runs on the whole head with the bundle's defaults and with
``refine=True`` (``medseg segment --refine``). Reported per map and contrast: the mean Dice
of the 32 structures, the tissue Dice of the structures merged (CSF, GM, WM), and the
hippocampus, pallidum and thalamus (left, right).

Read it as a comparison of the two modes on identical inputs, not as accuracy: the
anatomies were seen in training and each label is one flat intensity, which suits a
Gaussian per tissue better than real partial volume and bias do.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
MAPS = REPO.parent / "shared" / "data" / "synthseg-label-maps"
#: T1-like level of each segmented FreeSurfer label (0 dark .. 1 bright).
T1_LEVELS = {
    2: 0.9, 41: 0.9, 7: 0.85, 46: 0.85, 16: 0.8, 28: 0.8, 60: 0.8,  # white-matter-like
    3: 0.55, 42: 0.55, 8: 0.6, 47: 0.6, 17: 0.55, 53: 0.55, 18: 0.55, 54: 0.55, 26: 0.6, 58: 0.6, 11: 0.6, 50: 0.6,
    10: 0.72, 49: 0.72, 12: 0.65, 51: 0.65, 13: 0.8, 52: 0.8,  # thalamus, putamen, pallidum
    4: 0.15, 43: 0.15, 5: 0.15, 44: 0.15, 14: 0.15, 15: 0.15, 24: 0.15,  # CSF-like
}  # fmt: skip
SHOWN = ("hippocampus", "pallidum", "thalamus")


def render(labels: np.ndarray, contrast: str, rng: np.random.Generator) -> np.ndarray:
    """(z, y, x) float32 image of integer ``labels`` in ``contrast`` ("T1" or "T2")."""
    levels = {**{int(v): float(rng.uniform(0.05, 0.7)) for v in np.unique(labels) if v}, **T1_LEVELS}
    if contrast == "T2":
        levels.update({k: 1.0 if v < 0.3 else 1.05 - v for k, v in T1_LEVELS.items()})
    table = np.zeros(int(labels.max()) + 1, np.float32)
    for value, level in levels.items():
        if value < table.size:
            table[value] = level
    image = ndimage.gaussian_filter(table[labels], 0.8) + rng.normal(0, 0.03, labels.shape).astype(np.float32)
    return 1000 * np.clip(image, 0, None).astype(np.float32)


def scores(labels: np.ndarray, truth: np.ndarray, names: tuple[str, ...]) -> dict:
    from napari_medseg.training.label_maps import TISSUE_OF_STRUCTURE

    def dice(a: np.ndarray, b: np.ndarray) -> float:
        return float(2 * (a & b).sum() / max(int(a.sum() + b.sum()), 1))

    per_structure = {name: dice(labels == k, truth == k) for k, name in enumerate(names) if k}
    tissue, reference = TISSUE_OF_STRUCTURE[labels], TISSUE_OF_STRUCTURE[truth]
    out = {
        "mean_structures": round(float(np.mean(list(per_structure.values()))), 4),
        "tissue_csf_gm_wm": [round(dice(tissue == t, reference == t), 3) for t in (1, 2, 3)],
    }
    out.update({name: [round(per_structure[f"{side} {name}"], 3) for side in ("left", "right")] for name in SHOWN})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--maps", nargs="+", type=int, default=[3, 17], help="label map numbers (training_seg_NN)")
    parser.add_argument("--model", default="brain-structures")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not MAPS.is_dir():
        sys.exit(f"label maps not found at {MAPS}")
    from napari_medseg.inference import segment
    from napari_medseg.io import read_volume
    from napari_medseg.models import load_model
    from napari_medseg.preprocess.orientation import reorient
    from napari_medseg.training.label_maps import load_label_map
    from napari_medseg.types import Volume

    model = load_model(args.model, device="cpu")
    names = tuple(model.config.class_names)
    rng = np.random.default_rng(args.seed)
    report: dict = {"model": args.model, "seed": args.seed, "maps": {}}
    for number in args.maps:
        path = MAPS / f"training_seg_{number:02d}.nii.gz"
        canonical, _ = reorient(read_volume(path), "RAS")
        labels = np.rint(np.asarray(canonical.array)).astype(np.int32)
        truth = load_label_map(path).structures  # the same orientation, inner extras resolved
        for contrast in ("T1", "T2"):
            volume = Volume(render(labels, contrast, rng), canonical.geometry)
            for mode, refine in (("default", False), ("refined", True)):
                result = scores(segment(volume, model, device="cpu", refine=refine).labels, truth, names)
                report["maps"][f"{number} {contrast} {mode}"] = result
                print(f"{number} {contrast} {mode}: {json.dumps(result)}", file=sys.stderr, flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
