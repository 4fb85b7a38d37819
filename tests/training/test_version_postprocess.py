"""The post-processing a fine-tuned version carries."""

from __future__ import annotations

from napari_medseg.training.version_postprocess import FINETUNED_PRIOR_WEIGHT, MIN_STEPS_FOR_PRIOR, finetuned_config
from tests.tiny_models import tiny_config


def _with_postprocess(postprocess):
    config = tiny_config()
    data = config.to_dict()
    data["extra"] = {**data["extra"], "postprocess": postprocess}
    return type(config).from_dict(data)


def test_an_anchored_version_gives_its_network_a_say_in_the_mixture():
    parent = _with_postprocess({"brain_mask": {"closing_voxels": 3}, "em_refine": {"iterations": 30, "prior_weight": 0.0}})
    version = finetuned_config(parent, anchored=True, steps=MIN_STEPS_FOR_PRIOR)
    assert version.extra["postprocess"]["em_refine"] == {"iterations": 30, "prior_weight": FINETUNED_PRIOR_WEIGHT}
    assert version.extra["postprocess"]["brain_mask"] == {"closing_voxels": 3}
    assert parent.extra["postprocess"]["em_refine"]["prior_weight"] == 0.0  # a copy, not an edit
    assert finetuned_config(parent, anchored=False, steps=500) is parent


def test_versions_without_a_mixture_or_with_a_stronger_prior_keep_their_settings():
    no_mixture = _with_postprocess({"brain_mask": {"closing_voxels": 3}})
    assert finetuned_config(no_mixture, anchored=True, steps=MIN_STEPS_FOR_PRIOR) is no_mixture
    strong = _with_postprocess({"em_refine": {"iterations": 5, "prior_weight": 2.0}})
    assert finetuned_config(strong, anchored=True, steps=MIN_STEPS_FOR_PRIOR) is strong
    plain = tiny_config()
    assert finetuned_config(plain, anchored=True, steps=MIN_STEPS_FOR_PRIOR) is plain


def test_a_short_run_keeps_the_parents_post_processing():
    parent = _with_postprocess({"em_refine": {"iterations": 30, "prior_weight": 0.0}})
    assert finetuned_config(parent, anchored=True, steps=MIN_STEPS_FOR_PRIOR - 1) is parent


def test_the_note_tells_whether_corrections_reach_the_labels():
    from napari_medseg.training.version_postprocess import mixture_note

    parent = _with_postprocess({"em_refine": {"iterations": 30, "prior_weight": 0.0}})
    version = finetuned_config(parent, anchored=True, steps=MIN_STEPS_FOR_PRIOR)
    assert "reach the labels" in mixture_note(parent, version, anchored=True, steps=MIN_STEPS_FOR_PRIOR)
    short = mixture_note(parent, parent, anchored=True, steps=20)
    assert "only 20 steps" in short and "fine-tune longer" in short
    assert "mixture alone" in mixture_note(parent, parent, anchored=False, steps=500)
    assert mixture_note(tiny_config(), tiny_config(), anchored=True, steps=500) is None
