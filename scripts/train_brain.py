"""Train a shipped brain model from the 20 real label maps (SynthSeg's method).

    python scripts/train_brain.py --task locator --out resources/models/brain-locator
    python scripts/train_brain.py --task tissue --arch unet --out resources/models/brain-tissue-unet
    python scripts/train_brain.py --task tissue --arch transunet --init-from resources/models/brain-tissue-unet \
        --steps 5000 --cycles 3 --max-minutes 86 --out resources/models/brain-tissue-transunet
    python scripts/train_brain.py --task structures --arch unet --init-from resources/models/brain-tissue-unet \
        --steps 4500 --max-minutes 86 --out resources/models/brain-structures

Data: ``--maps`` (default ``../shared/data/synthseg-label-maps`` beside the checkout): the
label maps of 20 real heads from the public repository BBillot/SynthSeg,
``data/training_label_maps/`` (commit 3168fdf38ad220bd1927be43b67c5e9409a78ee7),
Apache-2.0. Every training image is synthesised on the fly from them
(:mod:`napari_medseg.training.label_synth`); no scan is used. The tasks:

- ``locator``: a small 3D U-Net that finds the brain (every brain label, CSF included) in
  the whole head at 4 mm; the tissue and structure bundles run it first
  (``extra["locator"]``) and label only inside the brain it finds.
- ``tissue``: a 2.5D network (5 slices 2 mm apart) for background, CSF, grey and white
  matter at 1 mm.
- ``structures``: the same for SynthSeg's 32 structures, written with FreeSurfer ids.
  Started from the tissue U-Net (``--init-from``, ``scripts/initialise.py``): trained from
  scratch for 85 minutes on 2 CPU cores, the 33-class network had learnt none of the deep
  grey nuclei, the hippocampus or the amygdala (all 0 mL on the dev subject).

Runs on the CPU (bf16 autocast where the processor has it) or a GPU; ``--max-minutes``
bounds the wall time. The command, data and machine are recorded in ``meta.json``.
"""

from __future__ import annotations

import argparse
import bisect
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
from napari_medseg.training.label_maps import (
    INTENSITY_GROUP_OF_STRUCTURE,
    STRUCTURES,
    TISSUE_COLORS,
    TISSUE_NAMES,
    class_volume_ranges,
    load_label_maps,
)
from napari_medseg.training.label_synth import LabelSynthesizer, SynthSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from initialise import initialise_from  # noqa: E402
from training_steps import supervised_step  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MAPS = REPO.parent / "shared" / "data" / "synthseg-label-maps"
MAPS_SOURCE = "BBillot/SynthSeg data/training_label_maps (commit 3168fdf38ad220bd1927be43b67c5e9409a78ee7), Apache-2.0"
CONTEXT_OFFSETS_MM = (-4.0, -2.0, 0.0, 2.0, 4.0)
SLAB_PATCH = (176, 208)
#: Share of structure-model samples centred on one structure drawn uniformly (see SynthSettings).
STRUCTURE_CENTRED_SHARE = 0.5
LOCATOR_GRID = (64, 64, 64)
LOCATOR_SPACING = 4.0
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
        "residual": True,
    },
    "locator": {"features": [8, 16, 32, 64], "residual": True, "norm": "group"},
}
#: How a tissue or structure bundle uses the locator: labels only inside its brain
#: (probability > threshold, largest piece) grown by ``margin_mm``.
LOCATOR_USE = {"bundle": "brain-locator", "threshold": 0.5, "margin_mm": 3.0}
#: Air (mm) the 2.5D networks see around each slice's foreground at inference: their
#: training slabs show the head with air around it, a cropped scan does not.
SLICE_MARGIN_MM = 32.0
#: The per-scan refinement a tissue or structure bundle offers on request (``--refine``): a
#: Gaussian per tissue fitted to the scan's intensities with the network's probabilities as
#: the prior (weight 1), only where the network found tissue. Off by default: the network
#: decides the labels, so that Grad-CAM, the uncertainty maps and fine-tuning describe them.
REFINEMENT = {"iterations": 12, "prior_weight": 1.0, "keep_background": True, "on_request": True}
NORMALIZATION = {"method": "foreground-percentile", "foreground_fraction": FOREGROUND_FRACTION, "percentile": NORMALIZE_PERCENTILE}

logger = logging.getLogger("train_brain")


class TrainingClock:
    """Progress of a run bounded by steps and by wall time: the learning rate follows the
    larger of the two fractions, so a run cut by ``max_minutes`` on a slow or busy machine
    still ends its schedule (warm-up, cosine decay) instead of stopping at a high rate.

    With ``cycles`` > 1 the schedule restarts (warm restarts, as in SGDR): cycle i takes a
    share of the run proportional to ``CYCLE_LENGTH ** i`` and peaks at ``CYCLE_PEAK ** i``
    of the learning rate, each with its own warm-up and cosine decay.
    """

    WARMUP = 0.025
    FLOOR = 0.02
    CYCLE_LENGTH = 0.8
    CYCLE_PEAK = 0.5

    def __init__(self, steps: int, max_minutes: float, cycles: int = 1) -> None:
        if cycles < 1:
            raise ValueError(f"cycles {cycles!r} must be at least 1")
        self.steps = max(1, steps)
        self.seconds = max(1.0, max_minutes * 60)
        self.started = time.time()
        self.fraction = 0.0
        lengths = [self.CYCLE_LENGTH**i for i in range(cycles)]
        self.cycle_ends = [sum(lengths[: i + 1]) / sum(lengths) for i in range(cycles)]

    def start(self) -> float:
        self.started = time.time()
        return self.started

    def update(self, step: int) -> None:
        self.fraction = min(1.0, max((step - 1) / self.steps, (time.time() - self.started) / self.seconds))

    def done(self, step: int) -> bool:
        return step >= self.steps or time.time() - self.started >= self.seconds

    def lr_factor(self) -> float:
        """Multiplier of the peak learning rate at the current fraction."""
        cycle = min(bisect.bisect_left(self.cycle_ends, self.fraction), len(self.cycle_ends) - 1)
        begin = self.cycle_ends[cycle - 1] if cycle else 0.0
        within = (self.fraction - begin) / (self.cycle_ends[cycle] - begin)
        return self.CYCLE_PEAK**cycle * self.cosine_factor(within)

    @classmethod
    def cosine_factor(cls, fraction: float) -> float:
        """Linear warm-up over the first ``WARMUP``, then cosine down to ``FLOOR``."""
        if fraction < cls.WARMUP:
            return 0.05 + 0.95 * fraction / cls.WARMUP
        decay = (fraction - cls.WARMUP) / (1 - cls.WARMUP)
        return cls.FLOOR + (1 - cls.FLOOR) * 0.5 * (1 + math.cos(math.pi * min(1.0, decay)))

    def describe(self) -> str:
        """The schedule in words, for ``meta.json``."""
        plain = "linear warm-up (first 2.5%) then cosine to 2% of lr, over the larger of steps/planned_steps and minutes/max_minutes"
        if len(self.cycle_ends) == 1:
            return plain
        ends = ", ".join(f"{end:.3f}" for end in self.cycle_ends)
        return f"{len(self.cycle_ends)} cycles ending at fractions {ends}, peak lr times {self.CYCLE_PEAK} at each restart; each: {plain}"


class SyntheticBatches(IterableDataset):
    """Endless synthetic batches for ``task``; one generator per data worker."""

    def __init__(self, maps_folder: Path, task: str, batch: int, seed: int, settings: SynthSettings) -> None:
        self.maps_folder = maps_folder
        self.task = task
        self.batch = batch
        self.seed = seed
        self.settings = settings

    def __iter__(self):
        torch.set_num_threads(1)
        info = get_worker_info()
        seed = self.seed + (info.id if info else 0) * 7919
        synthesizer = LabelSynthesizer(load_label_maps(self.maps_folder), self.settings, seed=seed)
        while True:
            if self.task == "locator":
                yield synthesizer.volumes(self.batch, shape=LOCATOR_GRID, spacing_mm=LOCATOR_SPACING, target="brain")
            else:
                yield synthesizer.slabs(self.batch, patch=SLAB_PATCH, offsets_mm=CONTEXT_OFFSETS_MM, target=self.task)


def model_config(task: str, arch: str) -> ModelConfig:
    """The bundle configuration of ``task`` (locator, tissue, structures) with ``arch``."""
    if task == "locator":
        return ModelConfig(
            architecture="unet",
            spatial_dims=3,
            in_channels=1,
            class_names=("background", "brain"),
            class_colors=("#00000000", "#f0c040ff"),
            arch_kwargs=ARCHITECTURES["locator"],
            modality="MR",
            canonical_orientation="RAS",
            target_spacing=(LOCATOR_SPACING,) * 3,
            normalization=NORMALIZATION,
            patch_size=LOCATOR_GRID,
        )
    if task == "tissue":
        names, colors = TISSUE_NAMES, TISSUE_COLORS
        extra = {"postprocess": {"em_refine": REFINEMENT}}
    else:
        names = tuple(s[1] for s in STRUCTURES)
        colors = tuple(s[3] for s in STRUCTURES)
        groups = [int(g) for g in INTENSITY_GROUP_OF_STRUCTURE]  # structures of like intensity share a Gaussian
        extra = {
            "label_values": [s[0] for s in STRUCTURES],
            "postprocess": {"em_refine": {**REFINEMENT, "class_groups": groups}},
        }
    return ModelConfig(
        architecture=arch,
        spatial_dims=2,
        in_channels=len(CONTEXT_OFFSETS_MM),
        class_names=names,
        class_colors=colors,
        arch_kwargs=ARCHITECTURES[arch],
        modality="MR",
        canonical_orientation="RAS",
        target_spacing=(1.0, 1.0, 1.0),
        normalization=NORMALIZATION,
        patch_size=SLAB_PATCH,
        # The tissue U-Net samples MC dropout in its finest decoder level only: 10 samples
        # cost 3-3.6x one pass instead of 7.8x, with the same error AUROC.
        dropout_sites=("decoder.levels.3",) if (task, arch) == ("tissue", "unet") else ("decoder",),
        extra={
            "context_offsets_mm": list(CONTEXT_OFFSETS_MM), "locator": LOCATOR_USE, "slice_margin_mm": SLICE_MARGIN_MM,
            **extra,
        },  # fmt: skip
    )


def synth_settings(args: argparse.Namespace) -> SynthSettings:
    """The synthesis of ``task``: T1-like contrasts for ``t1_fraction`` of the samples
    (default: most for the T1 tissue models, half for the any-contrast models); the
    locator's boxes are shifted further around the head."""
    fraction = args.t1_fraction
    if fraction is None:
        fraction = 0.8 if args.task == "tissue" else 0.5
    if args.task == "locator":
        # Real fields of view put the brain anywhere in the box, not where the centre of
        # a head-and-neck map puts it: shift the box by up to a few centimetres.
        return SynthSettings(p_t1_contrast=fraction, shift_mm=30.0)
    if args.task == "structures":
        return SynthSettings(p_t1_contrast=fraction, p_structure_centre=STRUCTURE_CENTRED_SHARE)
    return SynthSettings(p_t1_contrast=fraction)


def train(args: argparse.Namespace) -> Path:
    if args.out.exists():
        raise SystemExit(f"{args.out} exists; bundles are never overwritten")
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(max(1, args.threads))
    config = model_config(args.task, args.arch)
    model = build_model(config)
    initialised = initialise_from(model, args.init_from) if args.init_from else None
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    clock = TrainingClock(args.steps, args.max_minutes, args.cycles)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: clock.lr_factor())
    loader = DataLoader(
        SyntheticBatches(args.maps, args.task, args.batch, args.seed, synth_settings(args)),
        batch_size=None,
        num_workers=args.workers,
        prefetch_factor=4 if args.workers else None,
        persistent_workers=bool(args.workers),
    )
    amp = training_autocast_dtype(device)
    logger.info("training %s/%s on %s (autocast %s), %d steps of %d", args.task, args.arch, device, amp, args.steps, args.batch)
    model.train()
    started = None
    losses: list[float] = []
    step = 0
    for step, (image, target) in enumerate(loader, start=1):
        if started is None:  # the clock starts when the first batch arrives (maps read)
            started = clock.start()
        clock.update(step)
        losses.append(supervised_step(model, optimizer, scheduler, image, target, device, amp))
        elapsed = time.time() - started
        if step % args.log_every == 0 or step == 1:
            recent = sum(losses[-args.log_every :]) / len(losses[-args.log_every :])
            logger.info("step %d/%d loss %.4f lr %.2e %.1f min", step, args.steps, recent, scheduler.get_last_lr()[0], elapsed / 60)
        if clock.done(step):
            break

    minutes = (time.time() - (started or time.time())) / 60
    model = model.to("cpu", memory_format=torch.contiguous_format).eval()
    meta = {
        "name": args.out.name,
        "description": _description(args.task, args.arch),
        "training": {
            "command": " ".join(["python", "scripts/train_brain.py", *sys.argv[1:]]),
            "task": args.task,
            "steps": step,
            "planned_steps": args.steps,
            "schedule": clock.describe(),
            "max_minutes": args.max_minutes,
            "batch": args.batch,
            "minutes": round(minutes, 1),
            "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "autocast": str(amp),
            "seed": args.seed,
            "final_loss": round(sum(losses[-50:]) / max(1, len(losses[-50:])), 4),
            "data": {
                "label_maps": f"20 real whole-head label maps: {MAPS_SOURCE}",
                "synthesis": f"napari_medseg.training.label_synth, {synth_settings(args)}",
            },
            "machine": f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}",
        },
    }
    if initialised:
        meta["training"]["initialised_from"] = initialised
    if args.task != "locator":  # the volumes of real anatomy this model has seen, for the report
        ranges = class_volume_ranges(load_label_maps(args.maps), args.task)
        model.config = ModelConfig.from_dict({**config.to_dict(), "extra": {**config.to_dict()["extra"], "expected_volume_ml": ranges}})
    path = save_bundle(model, args.out, meta=meta, half=True)
    (args.out / "training_log.json").write_text(json.dumps({"loss": losses[:: max(1, len(losses) // 500)]}))
    logger.info("saved %s after %d steps in %.1f min", path, step, minutes)
    return path


def _description(task: str, arch: str) -> str:
    if task == "locator":
        return "3D U-Net that finds the brain (CSF included) in a whole head, any MR contrast, at 4 mm"
    if task == "tissue":
        return f"2.5D {arch} brain tissue segmentation of T1-weighted MRI (CSF, GM, WM)"
    return f"2.5D {arch} segmentation of 32 brain structures (SynthSeg's set, FreeSurfer ids), any MR contrast"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["locator", "tissue", "structures"], default="tissue")
    parser.add_argument("--arch", choices=["unet", "transunet"], default="unet", help="2.5D architecture (tissue, structures)")
    parser.add_argument("--out", type=Path, required=True, help="new bundle folder (never overwritten)")
    parser.add_argument("--maps", type=Path, default=DEFAULT_MAPS, help="folder of label maps")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="data synthesis processes")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the network on CPU")
    parser.add_argument("--device", choices=["auto", "cpu"], default="auto")
    parser.add_argument("--max-minutes", type=float, default=90.0)
    parser.add_argument("--t1-fraction", type=float, default=None, help="share of T1-like synthetic contrasts")
    parser.add_argument("--cycles", type=int, default=1, help="learning-rate cycles (warm restarts, peak halved at each)")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--init-from", help="start from this bundle's weights (the same architecture, or a TransUNet from a U-Net); see scripts/initialise.py")
    args = parser.parse_args()
    if args.task == "locator":
        args.arch = "locator"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train(args)


if __name__ == "__main__":
    main()
