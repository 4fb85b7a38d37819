"""A bundle's post-processing settings are parsed once, round-trip, and refuse bad values by name."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from napari_medseg.postprocess import BrainMaskSettings, MixtureSettings, PostprocessSettings
from tests.tiny_models import tiny_config


def test_empty_or_absent_entries_switch_steps_off():
    assert not PostprocessSettings.from_dict({})
    assert not PostprocessSettings.from_dict({"brain_mask": {}, "em_refine": None, "largest_component": False})
    assert not PostprocessSettings.from_config(tiny_config())
    configured = tiny_config(postprocess={"largest_component": True})
    assert PostprocessSettings.from_config(configured)
    assert not PostprocessSettings.from_config(configured, enabled=False)


def test_defaults_are_filled_and_the_stored_form_round_trips():
    settings = PostprocessSettings.from_dict({"brain_mask": {"opening_mm": 5}, "em_refine": {"prior_weight": 0}})
    assert settings.brain_mask == BrainMaskSettings(closing_voxels=3, stripped_support_fraction=0.6, opening_mm=5.0)
    assert settings.mixture == MixtureSettings(iterations=12, prior_weight=0.0, network_override=None)
    stored = settings.to_dict()
    assert stored == {
        "brain_mask": {"closing_voxels": 3, "stripped_support_fraction": 0.6, "opening_mm": 5.0},
        "em_refine": {"iterations": 12, "prior_weight": 0.0},
    }
    assert PostprocessSettings.from_dict(stored) == settings


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"brain_mask": {"closing_voxel": 3}}, r"brain_mask has unknown keys \['closing_voxel'\]"),
        ({"em_refine": {"iterations": 2.5}}, r"em_refine.iterations 2.5 must be a whole number"),
        ({"em_refine": {"prior_weight": float("nan")}}, r"em_refine.prior_weight nan must be a finite number"),
        ({"em_refine": {"network_override": 1.5}}, r"em_refine.network_override 1.5 must be in \[0, 1\]"),
        ({"brain_mask": {"opening_mm": "5"}}, r"brain_mask.opening_mm '5' must be a finite number"),
        ({"brain_mask": [3]}, r"brain_mask \[3\] must be a mapping"),
        ({"largest_component": "yes"}, r"largest_component 'yes' must be true or false"),
        ({"em": {}}, r"settings has unknown keys \['em'\]"),
        ({"em_refine": {"keep_background": 1}}, r"em_refine.keep_background 1 must be true or false"),
        ({"em_refine": {"class_groups": [0, 1, 1.5]}}, r"class_groups \[0, 1, 1.5\] must be a list of whole numbers"),
        ({"em_refine": {"class_groups": [1, 1, 2]}}, r"must start with 0 \(the background\)"),
        ({"em_refine": {"class_groups": [0, 1, 0]}}, r"every other class a group >= 1"),
        ({"em_refine": {"class_groups": [0, 1, 3]}}, r"must use the groups 1..3 each at least once"),
        ("keep", r"settings 'keep' must be a mapping"),
    ],
)
def test_bad_values_are_refused_by_name(raw, message):
    with pytest.raises(ValueError, match=message):
        PostprocessSettings.from_dict(raw)


def test_tissue_groups_and_keep_background_round_trip_and_groups_must_cover_every_class():
    raw = {"em_refine": {"prior_weight": 1.0, "keep_background": True, "class_groups": [0, 2, 1, 2]}}
    settings = PostprocessSettings.from_dict(raw)
    assert settings.mixture.keep_background and settings.mixture.class_groups == (0, 2, 1, 2)
    assert PostprocessSettings.from_dict(settings.to_dict()) == settings
    assert settings.to_dict()["em_refine"] == {"iterations": 12, **raw["em_refine"]}
    assert PostprocessSettings.from_config(tiny_config(postprocess=raw)) == settings  # 4 classes
    three_classes = SimpleNamespace(extra={"postprocess": raw}, class_names=("background", "a", "b"))
    with pytest.raises(ValueError, match=r"class_groups has 4 entries for 3 classes"):
        PostprocessSettings.from_config(three_classes)


def test_a_refinement_on_request_runs_only_when_asked_for():
    raw = {"largest_component": True, "em_refine": {"prior_weight": 1.0, "on_request": True}}
    config = tiny_config(postprocess=raw)
    assert PostprocessSettings.from_config(config) == PostprocessSettings(largest_component=True)
    refined = PostprocessSettings.from_config(config, refine=True)
    assert refined.mixture.on_request and refined == PostprocessSettings.offered(config)
    assert not PostprocessSettings.from_config(config, enabled=False, refine=True)
    assert PostprocessSettings.refinement_offered(config)
    assert not PostprocessSettings.refinement_offered(tiny_config(postprocess={"em_refine": {"prior_weight": 1.0}}))
    with pytest.raises(ValueError, match=r"em_refine.on_request 'yes' must be true or false"):
        PostprocessSettings.from_dict({"em_refine": {"on_request": "yes"}})


def test_samples_are_treated_alike_only_with_a_fixed_mask_and_a_prior_free_mixture():
    fixed = {"largest_component": True, "em_refine": {"prior_weight": 0.0}}
    assert not PostprocessSettings.from_dict(fixed).sample_dependent
    assert not PostprocessSettings.from_dict({"brain_mask": {"closing_voxels": 2}}).sample_dependent
    assert PostprocessSettings.from_dict({"em_refine": {"prior_weight": 0.0}}).sample_dependent  # own foreground
    assert PostprocessSettings.from_dict({**fixed, "em_refine": {"prior_weight": 0.5}}).sample_dependent
    own_tissue = {"prior_weight": 0.0, "keep_background": True}  # each sample's foreground is its region
    assert PostprocessSettings.from_dict({**fixed, "em_refine": own_tissue}).sample_dependent
    overridden = PostprocessSettings.from_dict(fixed).with_override(0.9)
    assert overridden.sample_dependent and overridden.mixture.network_override == 0.9
    assert overridden.without_mixture() == PostprocessSettings(largest_component=True)
    with pytest.raises(ValueError, match="no tissue mixture"):
        PostprocessSettings(largest_component=True).with_override(0.9)


def test_a_bundle_with_malformed_postprocessing_is_refused_when_read(tmp_path):
    from napari_medseg.models import BundleError, build_model, load_bundle, save_bundle

    folder = save_bundle(build_model(tiny_config(postprocess={"largest_component": True})), tmp_path / "bundle", meta={})
    config_file = folder / "config.json"
    config_file.write_text(config_file.read_text().replace('"largest_component": true', '"largest_component": 3'))
    with pytest.raises(BundleError, match=r"config.json: postprocess largest_component 3 must be true or false"):
        load_bundle(folder)
