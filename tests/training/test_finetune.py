"""The fine-tuning engine on a toy problem: progress, stop, learning, forgetting, new classes."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch

from napari_medseg.inference import segment
from napari_medseg.models import build_model
from napari_medseg.training.finetune import (
    FinetuneProgress,
    FinetuneResult,
    annotated_metrics,
    finetune,
    run_finetune,
)
from napari_medseg.postprocess.finetuned import FINETUNED_OVERRIDE, MIN_STEPS_FOR_OVERRIDE
from tests.tiny_models import tiny_config, tiny_model
from tests.training import single_thread, strokes, toy_volume  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")
logger = logging.getLogger(__name__)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _labels(model, volume):
    return segment(volume, model, device="cpu", precision="fp32", postprocessing=False).labels


@pytest.fixture(scope="module")
def pretrained_parent():
    """A tiny U-Net that already segments the toy (trained densely on another toy volume)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        volume, truth = toy_volume(seed=1)
        return run_finetune(
            tiny_model(0), [volume], [truth + 1], steps=30, lr=1e-2, device="cpu", forgetting="none", precision="fp32",
            context_fraction=0.25,  # the recipe this stand-in parent was measured with
        ).model
    finally:
        torch.set_num_threads(previous)


def test_generator_yields_progress_and_returns_the_result_without_touching_the_parent():
    volume, truth = toy_volume()
    parent = tiny_model(0)
    before = _state(parent)
    records = []
    steps = finetune(parent, [volume], [strokes(truth)], steps=3, batch_size=2, device="cpu")
    with pytest.raises(StopIteration) as done:
        while True:
            records.append(next(steps))
    result = done.value.value
    assert [r.step for r in records] == [1, 2, 3] and all(r.total == 3 for r in records)
    assert all(isinstance(r, FinetuneProgress) and np.isfinite(r.loss) and r.lr > 0 for r in records)
    assert isinstance(result, FinetuneResult) and result.steps_done == 3 and not result.stopped
    assert result.losses == [r.loss for r in records]
    assert result.model is not parent and not result.model.training
    assert not hasattr(result.model, "bundle_meta")
    for key, value in before.items():
        assert torch.equal(parent.state_dict()[key], value)
    assert not parent.training and all(p.requires_grad for p in parent.parameters())
    assert result.annotated_counts == {"background": 320, "CSF": 192, "grey matter": 0, "white matter": 192}
    meta = result.meta()
    assert meta["training"]["steps"] == 3 and meta["training"]["forgetting"]["method"] == "distill"
    assert set(meta["metrics"]) == {"annotated_before", "annotated_after"}


def test_stop_request_ends_cleanly_after_the_current_step():
    volume, truth = toy_volume()
    seen = []
    result = run_finetune(
        tiny_model(0), [volume], [strokes(truth)], steps=50, batch_size=2, device="cpu",
        progress=seen.append, should_stop=lambda: len(seen) >= 2,
    )  # fmt: skip
    assert result.stopped and result.steps_done == 2 and len(seen) == 2
    assert result.metrics_after["voxels"] == result.metrics_before["voxels"] > 0
    assert _labels(result.model, volume).shape == volume.shape
    none = run_finetune(tiny_model(0), [volume], [strokes(truth)], steps=5, device="cpu", should_stop=lambda: True)
    assert none.stopped and none.steps_done == 0 and none.losses == []


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_metrics_improve_on_the_annotated_voxels_of_a_toy_problem(precision):
    volume, truth = toy_volume()
    result = run_finetune(
        tiny_model(0), [volume], [strokes(truth)], steps=10, lr=1e-2, device="cpu", seed=0, precision=precision
    )
    assert result.settings["precision"] == precision
    before, after = result.metrics_before, result.metrics_after
    logger.info("toy (%s): accuracy %.3f -> %.3f", precision, before["accuracy"], after["accuracy"])
    assert before["voxels"] == after["voxels"] == 704
    assert after["accuracy"] > before["accuracy"] + 0.3
    assert after["mean_dice"] > before["mean_dice"]
    assert set(after["dice"]) == {"background", "CSF", "white matter"}  # only annotated classes
    assert result.losses[-1] < result.losses[0]


def test_distillation_keeps_predictions_away_from_the_strokes(pretrained_parent):
    """Measured: argmax agreement with the parent on unannotated voxels, 10 steps at lr 1e-2."""
    volume, truth = toy_volume()
    sparse = strokes(truth)
    reference = _labels(pretrained_parent, volume)
    unannotated = sparse == 0
    agreement = {}
    for method in ("none", "distill", "l2sp"):
        result = run_finetune(
            pretrained_parent, [volume], [sparse], steps=10, lr=1e-2, device="cpu", forgetting=method,
            l2sp_weight=0.1, seed=0, precision="fp32", context_fraction=0.25,  # 30 of 40 windows on strokes in 10 steps
        )  # fmt: skip
        agreement[method] = float((_labels(result.model, volume) == reference)[unannotated].mean())
        assert result.metrics_after["accuracy"] > 0.9
    logger.warning("agreement with the parent on unannotated voxels: %s", str(agreement))
    assert agreement["distill"] > agreement["none"] + 0.02
    assert agreement["l2sp"] >= agreement["none"]


def test_l2sp_keeps_weights_near_the_parent():
    volume, truth = toy_volume()
    parent = tiny_model(0)

    def distance(method):
        model = run_finetune(parent, [volume], [strokes(truth)], steps=5, lr=1e-2, device="cpu", forgetting=method).model
        return sum(float((a - b).detach().pow(2).sum()) for a, b in zip(model.parameters(), parent.parameters()))

    assert distance("l2sp") < distance("none")


def test_new_class_from_strokes_grows_the_head():
    volume, truth = toy_volume()
    sparse = strokes(truth)
    sparse[2, 9:12, 20:24] = 5  # value K + 1: the new class "lesion"
    with pytest.raises(ValueError, match="new_classes"):
        finetune(tiny_model(0), [volume], [sparse], steps=1)
    parent = tiny_model(0)
    result = run_finetune(
        parent, [volume], [sparse], steps=4, lr=1e-2, new_classes=["lesion"], device="cpu", forgetting="distill+l2sp"
    )
    assert result.model.config.class_names[-1] == "lesion" and result.model.config.num_classes == 5
    assert parent.config.num_classes == 4 and result.model.decoder.head.out_channels == 5
    assert result.annotated_counts["lesion"] == 12
    assert result.metrics_before["dice"]["lesion"] == 0.0 and "lesion" in result.metrics_after["dice"]


@pytest.mark.parametrize("deep_supervision", [False, True])
def test_3d_models_and_deep_supervision_train_through_the_same_path(deep_supervision):
    volume, truth = toy_volume()
    config = tiny_config(spatial_dims=3)
    config = dataclasses.replace(config, arch_kwargs={**config.arch_kwargs, "deep_supervision": deep_supervision})
    torch.manual_seed(0)
    parent = build_model(config).eval()
    result = run_finetune(parent, [volume], [strokes(truth)], steps=2, batch_size=2, device="cpu", patch=(8, 16, 16))
    assert result.steps_done == 2 and result.metrics_after["voxels"] == 704
    assert result.settings["patch"] == [8, 16, 16]


def test_bad_arguments_are_refused_at_call_time():
    volume, truth = toy_volume()
    model = tiny_model(0)
    cases = [
        (dict(images=[volume], labels=[]), "one label volume per image"),
        (dict(steps=-1), "steps"),
        (dict(lr=0), "lr"),
        (dict(forgetting="ewc"), "forgetting"),
        (dict(class_weights=[1.0]), "class_weights"),
        (dict(patch=(8,)), "patch"),
    ]
    for options, message in cases:
        images = options.pop("images", [volume])
        labels = options.pop("labels", [strokes(truth)])
        with pytest.raises(ValueError, match=message):
            finetune(model, images, labels, **options)
    with pytest.raises(ValueError, match="no annotated voxel"):
        run_finetune(model, [volume], [np.zeros(volume.shape, np.uint8)], steps=1, device="cpu")


def test_annotated_metrics_from_a_confusion_matrix():
    confusion = np.array([[3, 1, 0], [0, 0, 0], [1, 0, 5]])
    metrics = annotated_metrics(confusion, ("background", "a", "b"))
    assert metrics["voxels"] == 10 and metrics["accuracy"] == 0.8
    assert metrics["dice"] == {"background": 6 / 8, "b": 10 / 11}


def test_distilling_toward_a_segmentation_teaches_its_labels_where_nobody_painted(pretrained_parent):
    """The reference segmentation (what the annotator saw) calls the bright half class 2,
    the parent network calls it class 3; strokes on slices 2 and 5 mark background and the
    dark half only. Measured: 0.92 of the bright half follows the reference after 100 steps
    (none after 30: class 2 starts far below the others), 0.0 when distilling the network."""
    volume, truth = toy_volume()
    sparse = strokes(truth)
    seen = truth.copy()
    seen[truth == 3] = 2
    elsewhere = (sparse == 0) & (truth == 3)
    share = {}
    for target in ("segmentation", "network"):
        result = run_finetune(
            pretrained_parent, [volume], [np.where(sparse == 4, 0, sparse)], steps=100, lr=1e-2, device="cpu",
            precision="fp32", distill_target=target, references=[seen] if target == "segmentation" else None,
        )  # fmt: skip
        share[target] = float((_labels(result.model, volume)[elsewhere] == 2).mean())
        assert result.settings["forgetting"]["distill_target"] == target
    logger.warning("share of the bright half labelled as the reference says: %s", str(share))
    assert share["segmentation"] > 0.8 and share["network"] < 0.1


def test_default_reference_is_the_parents_own_segmentation_and_the_version_trusts_its_network():
    volume, truth = toy_volume()
    data = tiny_config().to_dict()
    data["extra"] = {**data["extra"], "postprocess": {"em_refine": {"iterations": 5, "prior_weight": 0.0}}}
    parent = build_model(type(tiny_config()).from_dict(data))
    options = {"steps": MIN_STEPS_FOR_OVERRIDE, "batch_size": 1, "patch": (16, 16), "device": "cpu", "precision": "fp32"}
    anchored = run_finetune(parent, [volume], [strokes(truth)], **options)
    assert anchored.model.config.extra["postprocess"]["em_refine"] == {
        "iterations": 5, "prior_weight": 0.0, "network_override": FINETUNED_OVERRIDE
    }  # fmt: skip
    assert "network_override" not in parent.config.extra["postprocess"]["em_refine"]
    plain = run_finetune(parent, [volume], [strokes(truth)], **options, distill_target="network")
    assert "network_override" not in plain.model.config.extra["postprocess"]["em_refine"]
    short = run_finetune(parent, [volume], [strokes(truth)], **{**options, "steps": 3})
    assert "network_override" not in short.model.config.extra["postprocess"]["em_refine"]
    assert "reach the labels" in anchored.settings["postprocess_note"]
    assert "fine-tune longer" in short.settings["postprocess_note"]


def test_reference_segmentations_are_checked_at_call_time():
    volume, truth = toy_volume()
    parent = tiny_model(0)
    with pytest.raises(ValueError, match="distill_target"):
        finetune(parent, [volume], [strokes(truth)], distill_target="whatever")
    with pytest.raises(ValueError, match="one per image"):
        finetune(parent, [volume], [strokes(truth)], distill_target="network", references=[truth])
    with pytest.raises(ValueError, match="grid"):
        finetune(parent, [volume], [strokes(truth)], references=[truth[:4]])
    with pytest.raises(ValueError, match="integer"):
        finetune(parent, [volume], [strokes(truth)], references=[truth.astype(float)])

    with pytest.raises(ValueError, match="offers no refinement on request"):
        finetune(parent, [volume], [strokes(truth)], refine=True)


def test_refine_keeps_toward_the_parents_refined_segmentation():
    """With ``refine`` the guard keeps the segmentation the parent gives with its refinement on
    request, exactly as if that segmentation had been given; the version records it."""
    from napari_medseg.training.finetune_run import FinetuneRun
    from napari_medseg.training.options import FinetuneOptions

    volume, truth = toy_volume()
    data = tiny_config().to_dict()  # the scan's intensities alone decide the refined labels
    data["extra"] = {**data["extra"], "postprocess": {"em_refine": {"iterations": 5, "prior_weight": 0.0, "on_request": True}}}
    parent = build_model(type(tiny_config()).from_dict(data))
    refined = segment(volume, parent, device="cpu", refine=True).labels  # as the fine-tune segments it
    assert (refined != segment(volume, parent, device="cpu").labels).any()
    with pytest.raises(ValueError, match="give one of them"):
        finetune(parent, [volume], [strokes(truth)], refine=True, references=[refined])
    options = FinetuneOptions(refine=True, steps=1, batch_size=1, patch=(16, 16), device="cpu", precision="fp32")
    asked = FinetuneRun(parent, [volume], [strokes(truth)], None, options)
    given = FinetuneRun(parent, [volume], [strokes(truth)], [refined], dataclasses.replace(options, refine=False))
    torch.testing.assert_close(asked.cases[0].reference, given.cases[0].reference, rtol=0, atol=0)
    result = run_finetune(parent, [volume], [strokes(truth)], options)
    assert result.settings["distill_reference"] == "parent segmentation, refined"
    assert result.settings["forgetting"]["refine"] is True


def test_the_reference_loss_is_cross_entropy_on_unannotated_voxels_only():
    from napari_medseg.training.forgetting import reference_loss

    logits = torch.randn(2, 4, 5, 6, requires_grad=True)
    reference = torch.randint(0, 4, (2, 5, 6))
    reference[0, 0] = -1  # past the volume's edge
    mask = torch.rand(2, 5, 6) > 0.3
    loss = reference_loss(torch.log_softmax(logits, dim=1), reference, mask)
    keep = mask & (reference >= 0)
    expected = torch.nn.functional.cross_entropy(logits.permute(0, 2, 3, 1)[keep], reference[keep])
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert (logits.grad.abs().sum(1)[~keep] == 0).all() and (logits.grad.abs().sum(1)[keep] > 0).all()
    empty = reference_loss(torch.log_softmax(logits, dim=1), reference, torch.zeros_like(mask))
    assert float(empty.detach()) == 0.0 and empty.requires_grad


def test_a_new_class_may_grow_only_where_the_reference_says_its_parent_class():
    from napari_medseg.training.forgetting import new_class_parents, reference_log_probabilities, reference_loss

    logits = torch.zeros(1, 5, 1, 2, requires_grad=True)  # 4 old classes + 1 new, two voxels
    reference = torch.tensor([[[1, 3]]])  # CSF, then white matter
    parents = torch.tensor([[0.0, 1.0, 0.0, 0.0]])  # the new class was painted on CSF
    log_probabilities = reference_log_probabilities(logits, 4, reference, parents)
    torch.testing.assert_close(log_probabilities.exp()[0, :, 0, 0], torch.tensor([0.25, 0.25, 0.25, 0.25, 0.0]))
    torch.testing.assert_close(log_probabilities.exp()[0, :, 0, 1], torch.full((5,), 0.2))
    reference_loss(log_probabilities, reference, torch.ones(1, 1, 2, dtype=torch.bool)).backward()
    new_logit_gradient = logits.grad[0, 4, 0]
    assert new_logit_gradient[0] == 0 and new_logit_gradient[1] > 0  # free in CSF, discouraged in WM
    strayed = torch.tensor([[0.0, 0.95, 0.0, 0.05]])  # 5% of the strokes crossed into WM: not a parent
    assert torch.isinf(reference_log_probabilities(logits, 4, reference, strayed)[0, 4, 0, 0])
    assert reference_log_probabilities(logits, 4, reference, strayed)[0, 4, 0, 1].isfinite()
    plain = reference_log_probabilities(logits, 4, reference)
    torch.testing.assert_close(plain, torch.log_softmax(logits[:, :4], dim=1))

    sparse = torch.tensor([[[5, 5, 5, 2, 0]]], dtype=torch.int16)
    seen = torch.tensor([[[1, 1, 2, 1, 3]]])
    shares = new_class_parents([sparse], [seen], 4, 5)
    torch.testing.assert_close(shares, torch.tensor([[0.0, 2 / 3, 1 / 3, 0.0]], dtype=torch.float64))
    assert new_class_parents([torch.zeros_like(sparse)], [seen], 4, 5).sum() == 0


def test_the_seed_makes_a_run_repeatable_and_the_callers_generator_is_left_alone():
    """Dropout draws from torch's global generator; the run seeds it and restores it."""
    volume, truth = toy_volume()
    parent = tiny_model(0)  # dropout 0.2 in the decoder

    def weights(seed):
        model = run_finetune(parent, [volume], [strokes(truth)], steps=4, lr=1e-2, device="cpu", seed=seed).model
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = weights(0)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's stream continues as if nothing ran
    torch.manual_seed(999)
    assert torch.equal(weights(0), first)
    assert not torch.equal(weights(1), first)


@pytest.mark.parametrize(
    ("steps", "zero_labels", "message"),
    [(0, False, "steps 0 must be at least 1"), (-3, False, "steps -3 must be at least 1"), (5, True, "no annotated voxel")],
)
def test_a_fine_tune_that_cannot_train_is_refused_by_the_call(monkeypatch, steps, zero_labels, message):
    """Refused when requested: before the parent segments the image, before any step."""
    from napari_medseg.training import finetune as engine

    def never(*args, **kwargs):
        raise AssertionError("inference or training started")

    monkeypatch.setattr(engine, "_steps", never)
    volume, truth = toy_volume()
    labels = np.zeros(truth.shape, np.uint8) if zero_labels else strokes(truth)
    with pytest.raises(ValueError, match=message):
        finetune(tiny_model(0), [volume], [labels], steps=steps, device="cpu")


def test_the_scheduler_sets_the_learning_rate_of_every_step():
    from napari_medseg.training.finetune_run import warmup_cosine

    volume, truth = toy_volume()
    records = []
    run_finetune(tiny_model(0), [volume], [strokes(truth)], steps=6, lr=1e-2, warmup_steps=2, batch_size=1,
                 patch=(16, 16), device="cpu", precision="fp32", distill_target="network", progress=records.append)  # fmt: skip
    assert [r.lr for r in records] == pytest.approx([1e-2 * warmup_cosine(i, 6, 2) for i in range(6)])
