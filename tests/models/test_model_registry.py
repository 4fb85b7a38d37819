"""build_model: architectures come from the registry only, and the model carries its config."""

from __future__ import annotations

import pytest
import torch

from napari_medseg.models import ARCHITECTURES, TransUNet, UNet, build_model, gradcam_layer_name


@pytest.mark.parametrize("architecture, cls", [("unet", UNet), ("transunet", TransUNet)])
@pytest.mark.parametrize("dims", [2, 3])
def test_build_model_from_config(make_config, architecture, cls, dims):
    config = make_config(architecture, dims)
    model = build_model(config)
    assert type(model) is cls
    assert model.config is config
    x = torch.randn(1, config.in_channels, *(10,) * dims)
    with torch.no_grad():
        assert model.eval()(x).shape == (1, config.num_classes, *(10,) * dims)


def test_registry_names():
    assert ARCHITECTURES == {"unet": UNet, "transunet": TransUNet}


@pytest.mark.parametrize("name", ["resnet", "napari_medseg.models.unet.UNet", "os.system"])
def test_unknown_architecture_lists_known_ones(make_config, name):
    known = r"architecture .* is unknown; known: \['transunet', 'unet'\]"
    with pytest.raises(ValueError, match=known):
        build_model(make_config(name))


def test_unexpected_arch_kwarg_is_named(make_config):
    with pytest.raises(ValueError, match="arch_kwargs .*'heads'"):
        build_model(make_config(arch_kwargs={"heads": 3}))


def test_bad_arch_kwarg_value_is_quoted(make_config):
    with pytest.raises(ValueError, match="norm 'layer'"):
        build_model(make_config(arch_kwargs={"features": [4, 8], "norm": "layer"}))


def test_dropout_site_without_dropout_is_refused(make_config):
    with pytest.raises(ValueError, match="dropout_sites entry 'encoder' holds no dropout"):
        build_model(make_config(dropout_sites=("encoder",)))
    with pytest.raises(ValueError, match="dropout_sites entry 'head' is not a module"):
        build_model(make_config(dropout_sites=("head",)))


def test_gradcam_layer_must_name_a_module(make_config):
    with pytest.raises(ValueError, match="gradcam_layer 'decoder.nothing'"):
        build_model(make_config(gradcam_layer="decoder.nothing"))
    model = build_model(make_config(gradcam_layer="bottleneck"))
    assert gradcam_layer_name(model) == "bottleneck"


def test_default_gradcam_layer(make_config):
    assert gradcam_layer_name(build_model(make_config("unet"))) == UNet.default_gradcam_layer
    assert gradcam_layer_name(build_model(make_config("transunet"))) == "bottleneck.token_grid"
