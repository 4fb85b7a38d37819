"""The bundle configurations ``scripts/train_brain.py`` writes: MC-dropout sites that exist."""

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
