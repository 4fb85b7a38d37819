"""Growing the output head for new classes: shapes, kept weights, config, bundles."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from napari_medseg.config import DEFAULT_PALETTE
from napari_medseg.models import build_model, load_bundle, save_bundle
from napari_medseg.training.heads import grow_head, grown_config, head_parameters
from tests.tiny_models import tiny_config, tiny_model
from tests.training import single_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize(
    ("spatial_dims", "architecture"), [(2, "unet"), (3, "unet"), (2, "transunet")], ids=["unet2d", "unet3d", "transunet2d"]
)
def test_new_class_grows_the_head_and_keeps_every_old_weight(spatial_dims, architecture):
    parent = tiny_model(1, spatial_dims=spatial_dims, architecture=architecture)
    before = {k: v.clone() for k, v in parent.state_dict().items()}
    grown = grow_head(parent, ["lesion"])
    k = parent.config.num_classes
    assert grown.config.class_names == (*parent.config.class_names, "lesion")
    heads = head_parameters(parent)
    assert heads == ["decoder.head.weight", "decoder.head.bias"]
    state = grown.state_dict()
    for key, value in before.items():
        assert torch.equal(parent.state_dict()[key], value)  # the parent is untouched
        if key in heads:
            assert state[key].shape == (k + 1, *value.shape[1:])
            assert torch.equal(state[key][:k], value)
        else:
            assert torch.equal(state[key], value)
    size = (12, 16) if spatial_dims == 2 else (8, 12, 16)
    x = torch.rand((2, parent.config.in_channels, *size), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        old, new = parent(x), grown.eval()(x)
    assert new.shape == (2, k + 1, *size)
    torch.testing.assert_close(new[:, :k], old)
    assert (new.argmax(1) < k).all()  # the new class starts below the old ones everywhere


def test_new_class_colour_is_the_next_free_palette_colour_and_bundles_round_trip(tmp_path):
    config = dataclasses.replace(tiny_config(), class_colors=("#00000000", DEFAULT_PALETTE[0], "#123456ff", DEFAULT_PALETTE[1]))
    torch.manual_seed(0)
    parent = build_model(config).eval()
    grown = grow_head(parent, ["lesion", "tumour"])
    assert grown.config.class_colors[-2:] == DEFAULT_PALETTE[2:4]
    assert grown.config.num_classes == 6 and grown.config.arch_kwargs == config.arch_kwargs
    loaded = load_bundle(save_bundle(grown, tmp_path / "grown", meta={}))
    for key, value in grown.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    assert not torch.equal(grown.state_dict()["decoder.head.weight"][4], grown.state_dict()["decoder.head.weight"][5])


def test_deep_supervision_heads_grow_too():
    config = dataclasses.replace(tiny_config(), arch_kwargs={"features": [4, 8, 16], "deep_supervision": True})
    torch.manual_seed(0)
    parent = build_model(config)
    assert sorted(head_parameters(parent)) == sorted(
        ["decoder.head.weight", "decoder.head.bias", "decoder.aux_heads.0.weight", "decoder.aux_heads.0.bias"]
    )
    grown = grow_head(parent, ["lesion"])
    outputs = grown.train()(torch.rand((1, 3, 16, 16)))
    assert [o.shape[1] for o in outputs] == [5, 5]


def test_no_new_classes_returns_the_model_itself_and_bad_names_are_refused():
    parent = tiny_model(0)
    assert grow_head(parent, []) is parent
    with pytest.raises(ValueError, match="already exists"):
        grown_config(parent.config, ["CSF"])
    with pytest.raises(ValueError, match="unique"):
        grown_config(parent.config, ["a", "a"])
    with pytest.raises(ValueError, match="colours"):
        grown_config(parent.config, ["a"], colors=["#ff0000", "#00ff00"])


def test_grown_config_drops_the_intensity_mixture_but_keeps_the_mask():
    from tests.tiny_models import tiny_config

    settings = {"brain_mask": {"closing_voxels": 2}, "em_refine": {"iterations": 5, "prior_weight": 0.0}}
    parent = tiny_config(postprocess=settings)
    grown = grown_config(parent, ["lateral ventricles"])
    assert grown.extra["postprocess"] == {"brain_mask": {"closing_voxels": 2, "stripped_support_fraction": 0.6, "opening_mm": 0.0}}
    assert parent.extra["postprocess"] == settings  # the parent's config is not touched
    assert grown_config(tiny_config(), ["lesion"]).extra["postprocess"] == {}


def test_new_classes_get_the_next_free_label_values():
    from napari_medseg.config import ModelConfig
    from napari_medseg.training.heads import grown_config
    from tests.tiny_models import tiny_config

    data = tiny_config().to_dict()
    data["extra"]["label_values"] = [0, 24, 3, 2]
    grown = grown_config(ModelConfig.from_dict(data), ["lesion", "vessel"])
    assert grown.label_values == (0, 24, 3, 2, 25, 26)
