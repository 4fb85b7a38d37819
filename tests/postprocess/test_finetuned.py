"""The post-processing a fine-tuned version carries."""

from __future__ import annotations

from napari_medseg.postprocess.finetuned import (
    FINETUNED_OVERRIDE,
    MIN_STEPS_FOR_OVERRIDE,
    finetuned_config,
    mixture_note,
    network_override_of,
)
from tests.tiny_models import tiny_config


def _with_postprocess(postprocess):
    config = tiny_config()
    data = config.to_dict()
    data["extra"] = {**data["extra"], "postprocess": postprocess}
    return type(config).from_dict(data)


def test_an_anchored_version_lets_its_confident_network_override_the_mixture():
    parent = _with_postprocess({"brain_mask": {"closing_voxels": 3}, "em_refine": {"iterations": 30, "prior_weight": 0.0}})
    version = finetuned_config(parent, anchored=True, steps=MIN_STEPS_FOR_OVERRIDE)
    assert version.extra["postprocess"]["em_refine"] == {
        "iterations": 30, "prior_weight": 0.0, "network_override": FINETUNED_OVERRIDE
    }  # fmt: skip
    assert version.extra["postprocess"]["brain_mask"]["closing_voxels"] == 3
    assert network_override_of(version) == FINETUNED_OVERRIDE and network_override_of(parent) is None
    assert "network_override" not in parent.extra["postprocess"]["em_refine"]  # a copy, not an edit
    assert finetuned_config(parent, anchored=False, steps=500) is parent
    assert finetuned_config(version, anchored=True, steps=500) is version  # a version of a version keeps its threshold


def test_versions_without_a_mixture_keep_their_settings():
    no_mixture = _with_postprocess({"brain_mask": {"closing_voxels": 3}})
    assert finetuned_config(no_mixture, anchored=True, steps=MIN_STEPS_FOR_OVERRIDE) is no_mixture
    plain = tiny_config()
    assert finetuned_config(plain, anchored=True, steps=MIN_STEPS_FOR_OVERRIDE) is plain


def test_a_mixture_with_the_network_as_prior_is_not_overridden():
    """The version's network already enters such a mixture's labels as its prior; overriding
    as well let its confident errors replace the mixture's (refined dev subject, two rounds
    of corrections: -0.008 with the override, +0.011 without)."""
    refined = _with_postprocess({"em_refine": {"prior_weight": 1.0, "keep_background": True, "on_request": True}})
    assert finetuned_config(refined, anchored=True, steps=500) is refined


def test_a_short_run_keeps_the_parents_post_processing():
    parent = _with_postprocess({"em_refine": {"iterations": 30, "prior_weight": 0.0}})
    assert finetuned_config(parent, anchored=True, steps=MIN_STEPS_FOR_OVERRIDE - 1) is parent


def test_the_note_tells_whether_corrections_reach_the_labels():
    parent = _with_postprocess({"em_refine": {"iterations": 30, "prior_weight": 0.0}})
    version = finetuned_config(parent, anchored=True, steps=MIN_STEPS_FOR_OVERRIDE)
    assert "reach the labels" in mixture_note(parent, version, anchored=True, steps=MIN_STEPS_FOR_OVERRIDE)
    short = mixture_note(parent, parent, anchored=True, steps=20)
    assert "only 20 steps" in short and "fine-tune longer" in short
    assert "mixture alone" in mixture_note(parent, parent, anchored=False, steps=500)
    assert mixture_note(version, version, anchored=True, steps=500) is None  # nothing new to say
    assert mixture_note(tiny_config(), tiny_config(), anchored=True, steps=500) is None
