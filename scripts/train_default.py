"""Train a shipped brain-tissue model from the repository's data alone.

    python scripts/train_default.py --arch unet --out resources/models/brain-tissue-unet
    python scripts/train_default.py --arch transunet --out resources/models/brain-tissue-transunet

Data: the MNI ICBM152 2009a T1 and GM/WM maps from the nilearn wheel (fetched with pip,
see ``nilearn_template.py``) and the whole-head label map in ``data/full-head-labels``.
Every training sample is synthesised on the fly (``napari_medseg.training.brain_synth``);
no scan of a real subject is used. Runs on the CPU (bf16 autocast where the processor
supports it) or a GPU; ``--max-minutes`` bounds the wall time.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from napari_medseg.config import ModelConfig
from napari_medseg.inference.device import training_autocast_dtype
from napari_medseg.models import build_model, save_bundle
from napari_medseg.training.augment import FOREGROUND_FRACTION, NORMALIZE_PERCENTILE
from napari_medseg.training.brain_atlas import build_atlas
from napari_medseg.training.brain_synth import CONTEXT_OFFSETS_MM, BrainSynthesizer, SynthSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nilearn_template import NILEARN_VERSION, fetch_template  # noqa: E402
from training_steps import supervised_step  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HEAD_LABELS = REPO / "data" / "full-head-labels" / "labels_1mm.nii.gz"
CLASS_NAMES = ("background", "CSF", "grey matter", "white matter")
CLASS_COLORS = ("#00000000", "#3c8cf0ff", "#f0a03cff", "#f0f0c8ff")
ARCHITECTURES = {
    "unet": {"features": [16, 32, 64, 128, 256], "residual": True, "norm": "group", "dropout": 0.1},
    "transunet": {
        "features": [16, 32, 64, 128],
        "embed_dim": 192,
        "depth": 4,
        "num_heads": 4,
        "mlp_ratio": 2.0,
        "dropout": 0.1,
        "train_grid": [22, 26],
    },
}
# Post-processing recorded in the bundle (napari_medseg.inference.refine): the brain mask
# from the network inside 4 mm of the registered MNI brain mask, opened by 5 mm (or the
# non-zero region of a brain-extracted scan), then a per-scan Gaussian mixture on
# intensities inside it, started from the network's class order.
POSTPROCESS = {
    "brain_mask": {"closing_voxels": 3, "stripped_support_fraction": 0.6, "opening_mm": 5.0, "atlas_margin_mm": 4.0},
    "em_refine": {"iterations": 30, "prior_weight": 0.0},
}

logger = logging.getLogger("train_default")


class SyntheticSlices(IterableDataset):
    """Endless batches from a :class:`BrainSynthesizer`; one generator per worker."""

    def __init__(self, batch: int, seed: int) -> None:
        self.batch = batch
        self.seed = seed

    def __iter__(self):
        torch.set_num_threads(1)
        info = get_worker_info()
        seed = self.seed + (info.id if info else 0) * 7919
        files = fetch_template()
        atlas = build_atlas(files["t1"], files["gm"], files["wm"], HEAD_LABELS)
        synthesizer = BrainSynthesizer(atlas, SynthSettings(), seed=seed)
        while True:
            yield synthesizer.sample(self.batch)


def model_config(arch: str) -> ModelConfig:
    return ModelConfig(
        architecture=arch,
        spatial_dims=2,
        in_channels=len(CONTEXT_OFFSETS_MM),
        class_names=CLASS_NAMES,
        class_colors=CLASS_COLORS,
        arch_kwargs=ARCHITECTURES[arch],
        modality="MR",
        canonical_orientation="RAS",
        target_spacing=(1.0, 1.0, 1.0),
        normalization={
            "method": "foreground-percentile",
            "foreground_fraction": FOREGROUND_FRACTION,
            "percentile": NORMALIZE_PERCENTILE,
        },
        patch_size=tuple(SynthSettings().patch),
        dropout_sites=("decoder",),
        extra={"context_offsets_mm": list(CONTEXT_OFFSETS_MM), "postprocess": POSTPROCESS},
    )


def train(args: argparse.Namespace) -> Path:
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(max(1, args.threads))
    config = model_config(args.arch)
    model = build_model(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    warmup = max(1, args.steps // 40)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, args.steps - warmup))) * 0.98 + 0.02

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    loader = DataLoader(
        SyntheticSlices(args.batch, args.seed),
        batch_size=None,
        num_workers=args.workers,
        prefetch_factor=4 if args.workers else None,
        persistent_workers=bool(args.workers),
    )
    amp = training_autocast_dtype(device)
    logger.info("training %s on %s (autocast %s), %d steps of %d", args.arch, device, amp, args.steps, args.batch)
    model.train()
    started = time.time()
    losses: list[float] = []
    step = 0
    for step, (image, target) in enumerate(loader, start=1):
        losses.append(supervised_step(model, optimizer, scheduler, image, target, device, amp))
        elapsed = time.time() - started
        if step % args.log_every == 0 or step == 1:
            recent = sum(losses[-args.log_every :]) / len(losses[-args.log_every :])
            logger.info("step %d/%d loss %.4f lr %.2e %.1f min", step, args.steps, recent, scheduler.get_last_lr()[0], elapsed / 60)
        if step >= args.steps or elapsed > args.max_minutes * 60:
            break

    minutes = (time.time() - started) / 60
    model = model.to("cpu").eval()
    meta = {
        "name": args.out.name,
        "description": f"2D {args.arch} brain tissue segmentation of T1-weighted MRI (CSF, GM, WM)",
        "training": {
            "command": " ".join(["python", "scripts/train_default.py", *sys.argv[1:]]),
            "steps": step,
            "planned_steps": args.steps,
            "batch": args.batch,
            "minutes": round(minutes, 1),
            "device": str(device),
            "autocast": str(amp),
            "seed": args.seed,
            "final_loss": round(sum(losses[-50:]) / max(1, len(losses[-50:])), 4),
            "data": {
                "template": f"MNI ICBM152 2009a symmetric T1, GM, WM (nilearn {NILEARN_VERSION} wheel)",
                "head_labels": "New York Head whole-head labels (ROAST, GPL v3), data/full-head-labels",
                "synthesis": "napari_medseg.training.brain_synth (SynthSettings defaults)",
            },
            "machine": f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}",
        },
    }
    path = save_bundle(model, args.out, meta=meta, half=True)
    (args.out / "training_log.json").write_text(json.dumps({"loss": losses[:: max(1, len(losses) // 500)]}))
    logger.info("saved %s after %d steps in %.1f min", path, step, minutes)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="unet")
    parser.add_argument("--out", type=Path, required=True, help="new bundle folder (never overwritten)")
    parser.add_argument("--steps", type=int, default=2400)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="data synthesis processes")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the network on CPU")
    parser.add_argument("--device", choices=["auto", "cpu"], default="auto")
    parser.add_argument("--max-minutes", type=float, default=40.0)
    parser.add_argument("--log-every", type=int, default=50)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train(args)


if __name__ == "__main__":
    main()
