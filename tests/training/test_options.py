"""FinetuneOptions: each bad fine-tune option is refused by name when the options are made,
before any work; what fits only some models is refused by check_for."""

from __future__ import annotations

import pytest

from napari_medseg.training.options import DEFAULT_STEPS, FinetuneOptions
from tests.tiny_models import tiny_config


def test_defaults_are_valid_and_frozen():
    options = FinetuneOptions()
    assert options.steps == DEFAULT_STEPS and options.kept_toward_segmentation and not options.anchors_weights
    options.check_for(tiny_config(), images=1, label_volumes=1)
    with pytest.raises(AttributeError):
        options.steps = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("steps", 0, r"steps 0 must be at least 1: a new version needs training"),
        ("steps", -3, r"steps -3 must be at least 1"),
        ("steps", 2.5, r"steps 2.5 must be a positive int"),
        ("steps", True, r"steps True must be a positive int"),
        ("batch_size", 0, r"batch_size 0 must be a positive int"),
        ("lr", 0, r"lr 0 must be a positive number"),
        ("lr", float("inf"), r"lr inf must be a positive number"),
        ("forgetting", "ewc", r"forgetting 'ewc' must be one of"),
        ("distill_target", "labels", r"distill_target 'labels' must be one of"),
        ("distill_weight", -1, r"distill_weight -1 must be a non-negative number"),
        ("l2sp_weight", float("nan"), r"l2sp_weight nan must be a non-negative number"),
        ("precision", "fp16", r"precision 'fp16' must be auto, bf16 or fp32"),
        ("warmup_steps", 0, r"warmup_steps 0 must be a positive int"),
        ("context_fraction", 1.5, r"context_fraction 1.5 must be in \[0, 1\]"),
        ("patch", (0, 16), r"patch \(0, 16\) must be positive sizes"),
        ("refine", "yes", r"refine 'yes' must be True or False"),
        ("stroke_loss", "dice", r"stroke_loss 'dice' must be one of \('ce', 'ce\+dice'\)"),
    ],
)
def test_bad_values_are_refused_when_made(option, value, message):
    with pytest.raises(ValueError, match=message):
        FinetuneOptions(**{option: value})


def test_what_does_not_fit_the_model_is_refused_by_check_for():
    config = tiny_config()  # 2D, 4 classes
    with pytest.raises(ValueError, match="give one label volume per image"):
        FinetuneOptions().check_for(config, images=2, label_volumes=1)
    with pytest.raises(ValueError, match=r"class_weights \[1.0, 1.0\] must have 5 entries"):
        FinetuneOptions(new_classes=["lesion"], class_weights=[1.0, 1.0]).check_for(config, images=1, label_volumes=1)
    with pytest.raises(ValueError, match=r"refine: this unet model offers no refinement on request"):
        FinetuneOptions(refine=True).check_for(config, images=1, label_volumes=1)
    with pytest.raises(ValueError, match=r"refine keeps toward the refined segmentation: it needs distill_target 'segmentation', not 'network'"):
        FinetuneOptions(refine=True, distill_target="network")
    with pytest.raises(ValueError, match=r"patch \(8, 16, 16\) must be 2 positive sizes"):
        FinetuneOptions(patch=[8, 16, 16]).check_for(config, images=1, label_volumes=1)


def test_the_guard_flags_and_the_record():
    assert not FinetuneOptions(distill_target="network").kept_toward_segmentation
    assert not FinetuneOptions(forgetting="l2sp").kept_toward_segmentation
    assert not FinetuneOptions(distill_weight=0).distills
    assert FinetuneOptions(forgetting="distill+l2sp").anchors_weights
    assert FinetuneOptions(steps=50).warmup == 5 and FinetuneOptions(steps=500).warmup == 10
    record = FinetuneOptions(steps=30, new_classes=["lesion"]).record()
    assert record["steps_requested"] == 30 and record["new_classes"] == ["lesion"]
    assert record["forgetting"] == {"method": "distill", "distill_weight": 1.0, "distill_target": "segmentation",
                                    "refine": False, "l2sp_weight": 0.01}  # fmt: skip


def test_the_scheduler_warms_up_then_decays_to_a_tenth():
    from napari_medseg.training.finetune_run import warmup_cosine

    factors = [warmup_cosine(step, 100, 10) for step in range(100)]
    assert factors[:3] == pytest.approx([0.1, 0.2, 0.3]) and factors[9] == 1.0
    assert all(a >= b for a, b in zip(factors[9:], factors[10:]))
    assert factors[-1] == pytest.approx(0.1, abs=1e-3)


def test_the_stroke_loss_is_cross_entropy_unless_dice_is_asked_for():
    from types import SimpleNamespace

    import torch

    from napari_medseg.training.finetune_run import supervised_loss
    from napari_medseg.training.losses import partial_cross_entropy, partial_soft_dice

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 6, 6, generator=generator)
    batch = SimpleNamespace(target=torch.randint(0, 3, (2, 6, 6), generator=generator),
                            annotated=torch.rand(2, 6, 6, generator=generator) > 0.7)  # fmt: skip
    ce = partial_cross_entropy(logits, batch.target, batch.annotated)
    dice = partial_soft_dice(logits, batch.target, batch.annotated)
    assert FinetuneOptions().stroke_loss == "ce" and FinetuneOptions().record()["stroke_loss"] == "ce"
    torch.testing.assert_close(supervised_loss([logits], batch, None), ce)
    torch.testing.assert_close(supervised_loss([logits], batch, None, dice=True), ce + dice)
    # deep supervision: the coarser output weighs half
    torch.testing.assert_close(supervised_loss([logits, logits * 0], batch, None),
                               (ce + partial_cross_entropy(logits * 0, batch.target, batch.annotated) / 2) / 1.5)  # fmt: skip
