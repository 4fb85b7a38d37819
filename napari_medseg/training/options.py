"""What a fine-tune is asked to do: :class:`FinetuneOptions`, frozen and checked when made,
so that a bad value fails when the fine-tune is requested, not at its first step."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..config import ModelConfig

__all__ = ["DEFAULT_STEPS", "DISTILL_TARGETS", "FORGETTING", "PRECISIONS", "STROKE_LOSSES", "FinetuneOptions"]

FORGETTING = ("distill", "l2sp", "distill+l2sp", "none")
DISTILL_TARGETS = ("segmentation", "network")
PRECISIONS = ("auto", "bf16", "fp32")
#: The loss on the painted voxels: cross-entropy alone, or with a soft Dice term as in training.
STROKE_LOSSES = ("ce", "ce+dice")
#: Steps of a fine-tune unless told otherwise (the panel, the CLI and the Python API).
#: Fewer than :data:`~napari_medseg.postprocess.finetuned.MIN_STEPS_FOR_OVERRIDE` keep the
#: parent's post-processing.
DEFAULT_STEPS = 200


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} {value!r} must be a positive int (at least 1)")
    return value


def _non_negative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} {value!r} must be a non-negative number")
    return float(value)


def _tuple(value: Sequence[Any] | None) -> tuple[Any, ...] | None:
    return None if value is None else tuple(value)


@dataclass(frozen=True)
class FinetuneOptions:
    """Options of :func:`~napari_medseg.training.finetune.finetune` (see its module docstring
    for the forgetting guard).

    Attributes:
        steps: optimizer steps.
        lr: peak learning rate (AdamW; a linear warm-up, then a cosine decay to 10%).
        batch_size: windows per step (per process under torchrun).
        new_classes: names of classes the parent lacks: label value K + 1 + i means
            ``new_classes[i]`` (K = the parent's class count, background included).
        new_class_colors: their colours (None: the next free palette colours).
        device: ``"auto"`` (cuda, mps, cpu), ``"cpu"``, ``"cuda"``...; ignored under
            torchrun (each process uses its own device).
        precision: ``"auto"`` (bf16 autocast on CUDA GPUs that support it, else fp32),
            ``"bf16"`` or ``"fp32"``.
        forgetting: one of :data:`FORGETTING`.
        distill_weight, l2sp_weight: weights of the forgetting terms.
        distill_target: what distillation keeps on the unannotated voxels, one of
            :data:`DISTILL_TARGETS`: the parent's ``"segmentation"`` (post-processing
            included: what the annotator saw and corrected) or its ``"network"``'s softmax.
        refine: keep toward the parent's segmentation with its refinement kept on request
            (``segment(..., refine=True)``: what the annotator saw when they asked for it);
            needs ``distill_target="segmentation"`` and a parent that offers one.
        warmup_steps: linear warm-up steps (None: steps // 10, between 1 and 10).
        patch: training window, (py, px) for 2D or (pz, py, px) for 3D models (None:
            :func:`~napari_medseg.training.sampling.default_patch`).
        context_fraction: share of windows drawn at random rather than on a stroke (where
            only the forgetting guard acts). Half: with the network deciding every label,
            two rounds of corrections on a scan it never saw moved mean Dice by +0.028,
            +0.010 and +0.001 (three seeds, with the Dice term on the strokes) against
            -0.021, +0.005 and +0.018 with a quarter.
        augment: light bias-field / gamma / noise / left-right flip augmentation.
        class_weights: cross-entropy weight per class (old and new classes).
        stroke_loss: one of :data:`STROKE_LOSSES`. Cross-entropy alone by default: a soft
            Dice over a few hundred painted voxels per class pulls every one of them to
            certainty, and the network moved the cortex's edges too far (two rounds of
            corrections on a scan it never saw, three seeds: +0.038, +0.023, +0.030 with
            cross-entropy alone, +0.028, +0.010, +0.001 with the Dice term).
        seed: seeds sampling, augmentation and the new head rows.

    Raises:
        ValueError: a bad value, named (on construction).
    """

    steps: int = DEFAULT_STEPS
    lr: float = 1e-3
    batch_size: int = 4
    new_classes: tuple[str, ...] = ()
    new_class_colors: tuple[str, ...] | None = None
    device: Any = "auto"
    precision: str = "auto"
    forgetting: str = "distill"
    distill_weight: float = 1.0
    distill_target: str = "segmentation"
    refine: bool = False
    l2sp_weight: float = 0.01
    warmup_steps: int | None = None
    patch: tuple[int, ...] | None = None
    context_fraction: float = 0.5
    augment: bool = True
    class_weights: tuple[float, ...] | None = None
    stroke_loss: str = "ce"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("new_classes", "new_class_colors", "patch", "class_weights"):
            value = getattr(self, name)
            if name == "new_classes" and value is None:
                value = ()
            object.__setattr__(self, name, _tuple(value))
        if isinstance(self.steps, int) and not isinstance(self.steps, bool) and self.steps < 1:
            raise ValueError(f"steps {self.steps} must be at least 1: a new version needs training")
        _count("steps", self.steps)
        _count("batch_size", self.batch_size)
        if isinstance(self.lr, bool) or not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr {self.lr!r} must be a positive number")
        if self.forgetting not in FORGETTING:
            raise ValueError(f"forgetting {self.forgetting!r} must be one of {FORGETTING}")
        if self.distill_target not in DISTILL_TARGETS:
            raise ValueError(f"distill_target {self.distill_target!r} must be one of {DISTILL_TARGETS}")
        if not isinstance(self.refine, bool):
            raise ValueError(f"refine {self.refine!r} must be True or False")
        if self.refine and self.distill_target != "segmentation":
            raise ValueError(f"refine keeps toward the refined segmentation: it needs distill_target 'segmentation', not {self.distill_target!r}")
        object.__setattr__(self, "distill_weight", _non_negative("distill_weight", self.distill_weight))
        object.__setattr__(self, "l2sp_weight", _non_negative("l2sp_weight", self.l2sp_weight))
        if self.stroke_loss not in STROKE_LOSSES:
            raise ValueError(f"stroke_loss {self.stroke_loss!r} must be one of {STROKE_LOSSES}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} must be auto, bf16 or fp32")
        if self.warmup_steps is not None:
            _count("warmup_steps", self.warmup_steps)
        if _non_negative("context_fraction", self.context_fraction) > 1:
            raise ValueError(f"context_fraction {self.context_fraction!r} must be in [0, 1]")
        if self.patch is not None and (not self.patch or min(self.patch) < 1):
            raise ValueError(f"patch {self.patch} must be positive sizes")

    def check_for(self, config: ModelConfig, *, images: int, label_volumes: int) -> None:
        """Refuse options that do not fit the parent model or the inputs.

        Raises:
            ValueError: the first misfit, named (counts of images and label volumes,
                class weights per class, the patch's dimensions, a 2D model's slice offsets).
        """
        if not images or images != label_volumes:
            raise ValueError(f"{images} images and {label_volumes} label volumes: give one label volume per image (at least one)")
        num_classes = config.num_classes + len(self.new_classes)
        if self.class_weights is not None and len(self.class_weights) != num_classes:
            raise ValueError(f"class_weights {list(self.class_weights)} must have {num_classes} entries (one per class)")
        if self.patch is not None and len(self.patch) != config.spatial_dims:
            raise ValueError(f"patch {self.patch} must be {config.spatial_dims} positive sizes")
        if self.refine:
            from ..postprocess.settings import PostprocessSettings  # lazy: the package imports scipy

            if not PostprocessSettings.refinement_offered(config):
                raise ValueError(f"refine: this {config.architecture} model offers no refinement on request to keep toward")
        if config.spatial_dims == 2:
            _ = config.context_offsets  # raises for a 2D config without usable offsets

    @property
    def distills(self) -> bool:
        """Whether the forgetting guard includes distillation (with a positive weight)."""
        return self.forgetting in ("distill", "distill+l2sp") and self.distill_weight > 0

    @property
    def kept_toward_segmentation(self) -> bool:
        """Whether the unannotated voxels are kept toward a segmentation (the parent's, or one
        given): the version then learned those labels plus the corrections."""
        return self.distills and self.distill_target == "segmentation"

    @property
    def anchors_weights(self) -> bool:
        """Whether the guard includes L2-SP (with a positive weight)."""
        return self.forgetting in ("l2sp", "distill+l2sp") and self.l2sp_weight > 0

    @property
    def warmup(self) -> int:
        """Warm-up steps of the learning-rate schedule."""
        return self.warmup_steps if self.warmup_steps is not None else max(1, min(10, self.steps // 10))

    def record(self) -> dict[str, Any]:
        """The options as JSON-ready provenance (what a version's bundle records)."""
        data = asdict(self)
        return {
            "steps_requested": self.steps,
            "lr": float(self.lr),
            "batch_size": self.batch_size,
            "new_classes": list(self.new_classes),
            "forgetting": {
                "method": self.forgetting, "distill_weight": self.distill_weight,
                "distill_target": self.distill_target, "refine": self.refine, "l2sp_weight": self.l2sp_weight,
            },  # fmt: skip
            "context_fraction": float(self.context_fraction),
            "stroke_loss": self.stroke_loss,
            "augment": bool(self.augment),
            "seed": int(self.seed),
            "warmup_steps": self.warmup,
            "class_weights": None if data["class_weights"] is None else list(data["class_weights"]),
        }
