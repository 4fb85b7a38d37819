"""What a cohort runs with: the model and the ensemble members, resolved once, as segment does."""

from __future__ import annotations

import pytest

from napari_medseg.batch.plan import make_plan
from napari_medseg.cli.segment import _default_ensemble
from napari_medseg.models import load_model
from napari_medseg.models.catalog import resolve_bundle


def test_ensemble_without_members_takes_the_partners_segment_takes():
    plan = make_plan("brain-tissue-unet", uncertainty="ensemble")
    assert plan.ensemble == tuple(_default_ensemble(load_model("brain-tissue-unet")))
    assert plan.ensemble == (str(resolve_bundle("brain-tissue-transunet")),)
    assert plan.options()["ensemble"] == [make_plan("brain-tissue-transunet").weights_sha256]


def test_named_members_are_kept_and_a_model_without_partners_is_refused(bundle):
    named = make_plan("brain-tissue-unet", uncertainty="ensemble", ensemble=[str(bundle)])
    assert named.ensemble == (str(bundle),)
    with pytest.raises(ValueError, match="no shipped bundle predicts the classes of brain-locator"):
        make_plan("brain-locator", uncertainty="ensemble")  # no other shipped bundle finds "brain"


def test_refining_is_an_option_that_changes_the_results_and_is_recorded_only_when_on():
    plain, refined = make_plan("brain-tissue-unet"), make_plan("brain-tissue-unet", refine=True)
    assert "refine" not in plain.options()  # cohorts finished before the option stay finished
    assert refined.options()["refine"] is True and refined.options() != plain.options()
