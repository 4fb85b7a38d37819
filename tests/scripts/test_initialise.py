"""``scripts/initialise.py``: which tensors a new network takes from a trained bundle."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from napari_medseg.models import build_model, save_bundle
from tests._paths import scripts_module

SMALL_UNET = {"features": [8, 16, 32, 64], "residual": True, "norm": "group", "dropout": 0.1}
SMALL_TRANSUNET = {"features": [8, 16, 32], "embed_dim": 16, "depth": 1, "num_heads": 2, "train_grid": [4, 4], "residual": True}


@pytest.fixture(scope="module")
def modules():
    return scripts_module("train_brain"), scripts_module("initialise")


def _network(train_brain, arch, kwargs, seed):
    config = dataclasses.replace(train_brain.model_config("tissue", arch), arch_kwargs=kwargs, dropout_sites=("decoder",))
    torch.manual_seed(seed)
    return build_model(config)


def test_a_transunet_takes_the_unets_finest_levels_and_head_and_starts_only_its_transformer(modules, tmp_path):
    train_brain, initialise = modules
    unet = _network(train_brain, "unet", SMALL_UNET, seed=0)
    bundle = save_bundle(unet, tmp_path / "unet", meta={})
    model = _network(train_brain, "transunet", SMALL_TRANSUNET, seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    done = initialise.initialise_from(model, str(bundle))
    own, theirs = model.state_dict(), unet.state_dict()
    for level in range(2):  # the TransUNet's encoder: features[:-1]
        name = f"encoder.levels.{level}.block.conv1.weight"
        assert torch.equal(own[name], theirs[name])
    for level in range(2):  # the U-Net's decoder has one more, coarser level
        assert torch.equal(own[f"decoder.levels.{level}.up.weight"], theirs[f"decoder.levels.{level + 1}.up.weight"])
        assert torch.equal(own[f"decoder.levels.{level}.block.skip.weight"], theirs[f"decoder.levels.{level + 1}.block.skip.weight"])
    assert torch.equal(own["decoder.head.weight"], theirs["decoder.head.weight"])
    assert all(name.startswith("bottleneck.") for name in done["tensors_new"]) and done["tensors_new"]
    assert all(torch.equal(own[name], before[name]) for name in done["tensors_new"])
    assert done["tensors_copied"] + len(done["tensors_new"]) == len(own)
    assert done["architecture"] == "unet"


def test_a_unet_starts_a_unet_of_the_same_settings_whole(modules, tmp_path):
    train_brain, initialise = modules
    parent = _network(train_brain, "unet", SMALL_UNET, seed=0)
    model = _network(train_brain, "unet", SMALL_UNET, seed=1)
    done = initialise.initialise_from(model, str(save_bundle(parent, tmp_path / "unet", meta={})))
    assert done["tensors_new"] == []
    assert all(torch.equal(v, parent.state_dict()[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    "kwargs",
    [
        {**SMALL_TRANSUNET, "residual": False},  # other blocks
        {**SMALL_TRANSUNET, "features": [8, 16, 24]},  # not the U-Net's features without its last
    ],
)
def test_a_network_the_bundle_cannot_start_is_refused_naming_both(modules, tmp_path, kwargs):
    train_brain, initialise = modules
    bundle = save_bundle(_network(train_brain, "unet", SMALL_UNET, seed=0), tmp_path / "unet", meta={})
    with pytest.raises(SystemExit, match="unet .* cannot start transunet"):
        initialise.initialise_from(_network(train_brain, "transunet", kwargs, seed=1), str(bundle))
