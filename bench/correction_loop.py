"""The correction loop with a simulated annotator: strokes, fine-tune, re-segment.

    python bench/correction_loop.py [--rounds 3] [--steps 200]
                                    [--guards distill:1 distill-network:1 distill-network:0.2 l2sp:0.01 none]
                                    [--annotate-on postprocessed network] [--keep-models DIR] [--quick] [--refine]

Data: the dev subject (``shared/data/dev-subject``: T1 and its FSL FAST reference, 0
background, 1 CSF, 2 GM, 3 WM), which the shipped models never saw in training. Bundles
are written to a throw-away user data folder (``NAPARI_MEDSEG_HOME`` is set to a temporary
directory, or to ``--keep-models``), never to the user's own.

Scenario "corrections", one loop per (``--annotate-on``, ``--guards``) pair: start from the
default U-Net. Each round the simulated annotator (``bench/simulated_annotator.py``) looks
at the segmentation — with the bundle's post-processing (what users get) or of the
network alone — finds the largest error regions and draws short strokes in them,
labelled with the reference class; the corrections accumulate, at most ``--budget`` of the
brain voxels over all rounds. The current model is fine-tuned on all strokes so far with
the loop's forgetting guard and saved as a new version (parent = the previous version);
the scan is segmented again. Guards: ``distill:W`` distils toward the parent's segmentation
(post-processing included: the default of ``finetune``), ``distill-network:W`` toward the
parent network's softmax, ``l2sp:W``, ``none``. Reported per round: Dice per class and mean (CSF, GM, WM) on
the voxels *not annotated*, with and without post-processing, the fraction of brain
voxels annotated, and the fine-tune's wall and CPU seconds with the load average before it
(other work on the machine slows it); per loop, the mean Dice of the parent and of every
version on the voxels never annotated.

Scenario "new class", once per guard: lateral ventricles, a class the parent lacks,
derived from the reference (``simulated_annotator.lateral_ventricles``). Strokes on 3 axial
slices (the ventricles, the grey and white matter around them, other CSF), one fine-tune
that grows the head, then the new class's Dice on all other slices.

``--refine``: "with post-processing" includes the bundle's refinement kept on request, as
``medseg segment --refine`` (the fine-tuned versions let their network override it where
confident, :mod:`napari_medseg.postprocess.finetuned`).

Prints one JSON document; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from simulated_annotator import CLASSES, draw_strokes, lateral_ventricles, new_class_strokes

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MEDSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
MODEL = "brain-tissue-unet"  # the default parent
NEW_CLASS = "lateral ventricles"
GUARDS = ("distill", "distill-network", "l2sp", "none")
DEFAULT_GUARDS = [("distill", 1.0), ("distill-network", 1.0), ("l2sp", 0.01), ("none", 0.0)]

logger = logging.getLogger("correction_loop")


# --- measuring ------------------------------------------------------------------------------
def dice_table(labels: np.ndarray, reference: np.ndarray, where: np.ndarray, classes=CLASSES) -> dict[str, float]:
    """Dice of labels k = 1.. against the reference over the voxels in ``where``, and the mean."""
    labels, reference = labels[where], reference[where]
    scores = {}
    for k, name in enumerate(classes, start=1):
        a, b = labels == k, reference == k
        total = int(a.sum() + b.sum())
        scores[name] = round(float(2 * np.logical_and(a, b).sum() / total), 4) if total else float("nan")
    scores["mean"] = round(float(np.mean([scores[name] for name in classes])), 4)
    return scores


DEVICE = "cpu"  # set from --device
REFINE = False  # set from --refine


def segment_both(volume, model) -> dict[str, np.ndarray]:
    from napari_medseg.inference import segment

    return {
        "postprocessed": segment(volume, model, device=DEVICE, postprocessing=True, refine=REFINE).labels,
        "network": segment(volume, model, device=DEVICE, postprocessing=False).labels,
    }


def parse_guard(text: str) -> tuple[str, float]:
    """``"distill:0.2"``, ``"distill-network:1"``, ``"l2sp:0.01"``, ``"none"`` -> (method, weight)."""
    method, _, weight = text.partition(":")
    if method not in GUARDS:
        raise argparse.ArgumentTypeError(f"guard {text!r} must be distill:W, distill-network:W, l2sp:W or none")
    if method == "none":
        return "none", 0.0
    try:
        value = float(weight) if weight else (0.01 if method == "l2sp" else 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"guard weight in {text!r} must be a number") from None
    return method, value


def guard_options(method: str, weight: float) -> dict:
    if method.startswith("distill"):
        target = "network" if method == "distill-network" else "segmentation"
        return {"forgetting": "distill", "distill_weight": weight, "distill_target": target}
    options = {"forgetting": method}
    if method == "l2sp":
        options["l2sp_weight"] = weight
    return options


def finetune_version(parent, volume, sparse, *, steps, seed, guard, new_classes=(), tuning=None, references=None):
    """Fine-tune ``parent`` on the strokes (kept toward ``references``, the labels corrected,
    when given), save a new version, load it back."""
    from napari_medseg.models import load_model
    from napari_medseg.postprocess import PostprocessSettings
    from napari_medseg.training.finetune import run_finetune
    from napari_medseg.training.versions import save_result

    load = os.getloadavg()[0]
    start, cpu = time.perf_counter(), time.process_time()
    result = run_finetune(
        parent, [volume], [sparse], steps=steps, seed=seed, device=DEVICE, new_classes=new_classes,
        references=references, **guard_options(*guard), **(tuning or {}),
    )  # fmt: skip
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    path = save_result(result, parent)
    model = load_model(path, device=DEVICE)
    record = {
        "version": model.bundle_meta.get("version"),
        "parent": parent.bundle_meta.get("name"),
        "seconds_finetune": round(seconds, 1),
        "cpu_seconds_finetune": round(cpu, 1),  # about threads x wall when nothing else runs
        "load_average_before": round(load, 2),
        "steps": result.steps_done,
        "precision": result.settings.get("precision"),
        # the version's per-scan mixture: None when it has none (a grown head), 0 = network ignored
        "new_class_parents": result.settings.get("new_class_parents"),
        "mixture_prior_weight": getattr(PostprocessSettings.from_config(model.config).mixture, "prior_weight", None),
        "annotated_accuracy_before_after": [round(result.metrics_before["accuracy"], 4), round(result.metrics_after["accuracy"], 4)],
    }
    return model, record


def tuning_options(args) -> dict:
    """The fine-tune options given on the command line (the rest keep ``finetune``'s defaults)."""
    return {name: value for name, value in (("lr", args.lr), ("context_fraction", args.context_fraction)) if value is not None}


# --- scenarios ------------------------------------------------------------------------------
def corrections(volume, reference, parent, baseline, *, guard, annotate_on, args) -> dict:
    brain = reference > 0
    brain_voxels = int(brain.sum())
    per_round = int(args.budget * brain_voxels / args.rounds)
    sparse = np.zeros(reference.shape, np.uint8)
    model, current = parent, baseline
    history = [baseline]
    rounds = []
    for r in range(1, args.rounds + 1):
        sparse, strokes = draw_strokes(current[annotate_on], reference, sparse, budget=per_round)
        free = sparse == 0
        before = {mode: dice_table(labels, reference, free) for mode, labels in current.items()}
        # as the panel does: keep toward the labels the user corrected (refined ones with --refine)
        kept = [current["postprocessed"]] if REFINE and guard[0] == "distill" else None
        model, record = finetune_version(model, volume, sparse, steps=args.steps, seed=args.seed + r, guard=guard,
                                         tuning=tuning_options(args), references=kept)  # fmt: skip
        current = segment_both(volume, model)
        history.append(current)
        after = {mode: dice_table(labels, reference, free) for mode, labels in current.items()}
        record.update(
            round=r,
            strokes=len(strokes),
            stroke_slices=len({s["slice"] for s in strokes}),
            annotated_voxels=int((sparse > 0).sum()),
            annotated_per_class={name: int((sparse == k + 1).sum()) for k, name in enumerate(CLASSES, start=1)},
            annotated_fraction_of_brain=round(float((sparse > 0).sum() / brain_voxels), 5),
            dice_not_annotated_before=before,
            dice_not_annotated_after=after,
        )
        logger.info("%s, guard %s, round %d: %s", annotate_on, guard, r, json.dumps(record))
        rounds.append(record)
    free = sparse == 0
    summary = {}
    for mode in baseline:
        tables = [dice_table(labels[mode], reference, free) for labels in history]
        summary[mode] = {
            "parent": tables[0],
            "last": tables[-1],
            "mean_by_round": [t["mean"] for t in tables],
            "mean_change": round(tables[-1]["mean"] - tables[0]["mean"], 4),
        }
    return {
        "annotate_on": annotate_on,
        "guard": {"method": guard[0], "weight": guard[1]},
        "rounds": rounds,
        "parent_vs_last_on_never_annotated": summary,
        "max_seconds_finetune": max(r["seconds_finetune"] for r in rounds),
    }


def summarise(loop: dict) -> dict:
    """One line of the README table for a corrections loop (Dice on the voxels never
    annotated, parent then each round)."""
    change = loop["parent_vs_last_on_never_annotated"]
    return {
        "annotate_on": loop["annotate_on"],
        "guard": f"{loop['guard']['method']}:{loop['guard']['weight']:g}" if loop["guard"]["method"] != "none" else "none",
        "mean_dice_network": change["network"]["mean_by_round"],
        "mean_dice_postprocessed": change["postprocessed"]["mean_by_round"],
        "change_network": change["network"]["mean_change"],
        "change_postprocessed": change["postprocessed"]["mean_change"],
        "annotated_fraction": loop["rounds"][-1]["annotated_fraction_of_brain"],
        "seconds_finetune": [r["seconds_finetune"] for r in loop["rounds"]],
    }


def new_class(volume, reference, parent, baseline, *, guard, args) -> dict:
    ventricles, description = lateral_ventricles(reference)
    z_of = np.nonzero(ventricles.any(axis=(1, 2)))[0]
    per_slice = ventricles[z_of].sum(axis=(1, 2))
    cumulative = np.cumsum(per_slice) / per_slice.sum()
    slices = sorted({int(z_of[np.searchsorted(cumulative, q)]) for q in (0.25, 0.5, 0.75)})
    new_value = len(CLASSES) + 2  # class 4 -> sparse value 5
    sparse = new_class_strokes(reference, ventricles, slices)
    if args.new_class_strokes == "only-new":  # an annotator who paints the new structure alone
        sparse[sparse != len(CLASSES) + 2] = 0
    annotated = int((sparse > 0).sum())
    model, record = finetune_version(parent, volume, sparse, steps=args.steps, seed=args.seed, guard=guard, new_classes=[NEW_CLASS],
                                     tuning=tuning_options(args))  # fmt: skip
    truth = reference.copy()
    truth[ventricles] = len(CLASSES) + 1
    other = np.ones(reference.shape, bool)
    other[slices] = False
    results = {}
    for mode, labels in segment_both(volume, model).items():
        merged = np.where(labels == len(CLASSES) + 1, 1, labels)  # ventricles are CSF in the reference
        results[mode] = {
            "dice_new_class_other_slices": dice_table(labels, truth, other, (*CLASSES, NEW_CLASS))[NEW_CLASS],
            "new_class_voxels": int((labels == len(CLASSES) + 1).sum()),
            "dice_tissue_other_slices_ventricles_as_csf": dice_table(merged, reference, other),
        }
    record.update(
        guard={"method": guard[0], "weight": guard[1]},
        parent_dice_tissue_other_slices={mode: dice_table(labels, reference, other) for mode, labels in baseline.items()},
        structure=description,
        strokes_on=args.new_class_strokes,
        stroke_slices=slices,
        annotated_voxels=annotated,
        annotated_new_class_voxels=int((sparse == new_value).sum()),
        results=results,
    )
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=MODEL, help="the parent bundle (name or path)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per fine-tune")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: finetune's)")
    parser.add_argument("--context-fraction", type=float, help="share of windows drawn away from the strokes (default: finetune's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=float, default=0.0045, help="annotated fraction of brain voxels over all rounds")
    parser.add_argument("--guards", nargs="+", type=parse_guard, default=DEFAULT_GUARDS,
                        help="forgetting guards to compare: distill:W, distill-network:W, l2sp:W, none")
    parser.add_argument("--annotate-on", nargs="+", choices=("network", "postprocessed"), default=["postprocessed"],
                        help="which segmentation the annotator corrects (each is its own loop)")
    parser.add_argument("--keep-models", type=Path, help="keep the fine-tuned versions in this user data folder")
    parser.add_argument("--scenarios", nargs="+", choices=("corrections", "new-class"), default=["corrections", "new-class"])
    parser.add_argument("--new-class-strokes", choices=("full", "only-new"), default="full",
                        help="new-class scenario: strokes on the new class, the tissue around it and other CSF, or on the new class alone")
    parser.add_argument("--device", default="cpu", help="where to fine-tune and segment: cpu, cuda, auto...")
    parser.add_argument("--quick", action="store_true", help="a tiny run (1 round, 3 steps) to check that it works")
    parser.add_argument("--refine", action="store_true",
                        help="the labels users get include the bundle's refinement kept on request (medseg segment --refine)")
    args = parser.parse_args()
    global DEVICE, REFINE
    DEVICE, REFINE = args.device, args.refine
    if args.quick:
        args.rounds, args.steps, args.guards, args.annotate_on = 1, 3, args.guards[:1], args.annotate_on[:1]
    if not (SHARED / "dev-subject").is_dir():
        sys.exit(f"shared validation data not found at {SHARED}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="medseg-bench-") as home:
        # versions go here, never to the user's own folder
        os.environ["NAPARI_MEDSEG_HOME"] = str(args.keep_models) if args.keep_models else home
        import torch

        from napari_medseg.io import read_volume
        from napari_medseg.models import load_model

        volume = read_volume(SHARED / "dev-subject" / "t1.nii.gz")
        reference = read_volume(SHARED / "dev-subject" / "tissue_labels.nii.gz").array.astype(np.uint8)
        parent = load_model(args.model, device=DEVICE)
        started = time.perf_counter()
        baseline = segment_both(volume, parent)
        report = {
            "model": args.model,
            "threads": torch.get_num_threads(),
            "device": DEVICE if DEVICE == "cpu" else f"{DEVICE} ({torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'})",
            "settings": {"rounds": args.rounds, "steps": args.steps, "seed": args.seed, "budget": args.budget, "quick": args.quick,
                         "refine": args.refine,
                         **tuning_options(args)},
            "brain_voxels": int((reference > 0).sum()),
            "parent_dice": {mode: dice_table(labels, reference, np.ones(reference.shape, bool)) for mode, labels in baseline.items()},
        }  # fmt: skip
        if "corrections" in args.scenarios:
            report["corrections"] = [
                corrections(volume, reference, parent, baseline, guard=guard, annotate_on=mode, args=args)
                for mode in args.annotate_on
                for guard in args.guards
            ]
            report["corrections_summary"] = [summarise(loop) for loop in report["corrections"]]
        if "new-class" in args.scenarios:
            report["new_class"] = [new_class(volume, reference, parent, baseline, guard=guard, args=args) for guard in args.guards]
            report["new_class_summary"] = [
                {
                    "guard": f"{run['guard']['method']}:{run['guard']['weight']:g}",
                    "dice_other_slices": {mode: r["dice_new_class_other_slices"] for mode, r in run["results"].items()},
                    "tissue_mean_dice": {mode: r["dice_tissue_other_slices_ventricles_as_csf"]["mean"] for mode, r in run["results"].items()},
                    "parent_tissue_mean_dice": {mode: d["mean"] for mode, d in run["parent_dice_tissue_other_slices"].items()},
                    "seconds_finetune": run["seconds_finetune"],
                }
                for run in report["new_class"]
            ]
        report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
