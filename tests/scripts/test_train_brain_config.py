"""The bundle configurations ``scripts/train_brain.py`` writes: MC-dropout sites that exist, a refinement that parses."""

from __future__ import annotations

import pytest

from napari_medseg.models import build_model
from tests._paths import scripts_module


@pytest.mark.parametrize(
    "task, arch, sites",
    [("tissue", "unet", ("decoder.levels.3",)), ("tissue", "transunet", ("decoder",)), ("structures", "unet", ("decoder",))],
)
def test_dropout_sites_name_modules_of_the_network(task, arch, sites):
    config = scripts_module("train_brain").model_config(task, arch)
    assert tuple(config.dropout_sites) == sites
    modules = dict(build_model(config).named_modules())
    assert all(site in modules for site in sites)


@pytest.mark.parametrize("task, arch", [("tissue", "unet"), ("tissue", "transunet"), ("structures", "unet")])
def test_refinement_keeps_the_networks_background_and_groups_every_structure(task, arch):
    from napari_medseg.postprocess import PostprocessSettings

    config = scripts_module("train_brain").model_config(task, arch)
    assert PostprocessSettings.from_config(config).mixture is None  # the network decides the labels ...
    mixture = PostprocessSettings.from_config(config, refine=True).mixture  # ... unless asked; groups checked here
    assert mixture.keep_background and mixture.prior_weight == 1.0 and mixture.on_request
    if task == "structures":
        groups = dict(zip(config.class_names, mixture.class_groups))
        assert groups["left thalamus"] == groups["right thalamus"] != groups["left cerebral cortex"]
        assert groups["left hippocampus"] == groups["left cerebral cortex"]
    else:
        assert mixture.class_groups is None
