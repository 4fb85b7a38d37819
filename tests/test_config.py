"""ModelConfig: plain data, validated, round-trips through dict and JSON."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
import subprocess
import sys

import pytest

from napari_medseg.config import ModelConfig


def full_config(**changes) -> ModelConfig:
    fields = {
        "architecture": "transunet",
        "arch_kwargs": {"features": [8, 16, 32], "embed_dim": 32, "train_grid": [4, 4]},
        "spatial_dims": 2,
        "in_channels": 3,
        "class_names": ("background", "grey matter", "white matter"),
        "class_colors": ("#00000000", "#ff0000", (0.0, 0.5, 1.0, 1.0)),
        "modality": "MR",
        "canonical_orientation": "lps",
        "target_spacing": (1, 0.5, 0.5),
        "normalization": {"method": "percentile", "low": 0.5, "high": 99.5},
        "patch_size": (64, 64),
        "dropout_sites": ("decoder",),
        "gradcam_layer": "bottleneck.token_grid",
        "extra": {"ood": {"threshold": 0.3, "features": [1, 2]}},
    }
    fields.update(changes)
    return ModelConfig(**fields)


def test_dict_and_json_round_trip():
    config = full_config()
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert ModelConfig.from_json(config.to_json()) == config
    data = json.loads(config.to_json())
    assert data["arch_kwargs"]["features"] == [8, 16, 32]
    assert data["class_colors"][2] == [0.0, 0.5, 1.0, 1.0]


def test_values_are_normalised():
    config = full_config()
    assert config.canonical_orientation == "LPS"
    assert config.target_spacing == (1.0, 0.5, 0.5)
    assert config.class_names == ("background", "grey matter", "white matter")
    assert config.arch_kwargs["features"] == (8, 16, 32)
    assert config.num_classes == 3


def test_config_is_immutable_hashable_and_picklable():
    config = full_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.spatial_dims = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.arch_kwargs["depth"] = 2  # type: ignore[index]
    with pytest.raises(TypeError):
        config.extra["ood"]["threshold"] = 1  # type: ignore[index]
    assert hash(config) == hash(full_config())
    assert pickle.loads(pickle.dumps(config)) == config
    assert copy.deepcopy(config) == config
    assert dataclasses.replace(config, modality="CT").modality == "CT"


def test_minimal_config_gets_defaults_and_a_palette():
    config = ModelConfig(
        architecture="unet", spatial_dims=3, in_channels=1, class_names=["bg", "a"]
    )
    assert config.class_colors[0] == "#00000000"
    assert len(config.class_colors) == 2
    assert config.rgba_colors()[0] == (0.0, 0.0, 0.0, 0.0)
    assert config.normalization["method"] == "percentile"
    assert config.canonical_orientation == "LPS"
    assert config.patch_size == ()


def test_rgba_colors_from_hex_and_floats():
    rgba = full_config().rgba_colors()
    assert rgba[1] == (1.0, 0.0, 0.0, 1.0)
    assert rgba[2] == (0.0, 0.5, 1.0, 1.0)


@pytest.mark.parametrize("changes, quoted", [
    ({"architecture": ""}, "architecture ''"),
    ({"spatial_dims": 4}, "spatial_dims 4 must be 2 or 3"),
    ({"spatial_dims": "2"}, "spatial_dims '2'"),
    ({"in_channels": 0}, "in_channels 0"),
    ({"in_channels": 2.5}, "in_channels 2.5"),
    ({"class_names": ("background",)}, "class_names ('background',)"),
    ({"class_names": ("bg", "bg")}, "class_names ('bg', 'bg')"),
    ({"class_names": "bg,fg"}, "class_names 'bg,fg'"),
    ({"class_colors": ("#000", "#fff", "#abc")}, "class_colors[0] '#000'"),
    ({"class_colors": ("#000000",)}, "has 1 entries"),
    ({"class_colors": ("#000000", "#ff0000", (2, 0, 0, 1))}, "class_colors[2] (2, 0, 0, 1)"),
    ({"canonical_orientation": "LPA"}, "canonical_orientation 'LPA'"),
    ({"canonical_orientation": "RAS+"}, "canonical_orientation 'RAS+'"),
    ({"target_spacing": (1.0, 0.0, 1.0)}, "target_spacing (1.0, 0.0, 1.0)"),
    ({"target_spacing": (1.0, 1.0)}, "target_spacing (1.0, 1.0)"),
    ({"target_spacing": (1.0, float("nan"), 1.0)}, "target_spacing (1.0, nan, 1.0)"),
    # sizes no machine holds, refused before anything is built
    ({"target_spacing": (1e-6, 1.0, 1.0)}, "target_spacing (1e-06, 1.0, 1.0) must lie between 0.01 and 100 mm"),
    ({"target_spacing": (1.0, 1.0, 1e4)}, "target_spacing (1.0, 1.0, 10000.0)"),
    ({"in_channels": 10_000_000}, "in_channels 10000000 must be between 1 and 1024"),
    ({"class_names": tuple(f"c{i}" for i in range(5000))}, "class_names has 5000 entries; at most 1024"),
    ({"patch_size": (64, 100_000)}, "patch_size (64, 100000) must be 2 ints from 1 to 4096"),
    ({"normalization": {"low": 1}}, "normalization {'low': 1}"),
    ({"patch_size": (64, 64, 64)}, "patch_size (64, 64, 64)"),
    ({"patch_size": (64, 0)}, "patch_size (64, 0)"),
    ({"dropout_sites": ("decoder block",)}, "'decoder block'"),
    ({"gradcam_layer": "a..b"}, "gradcam_layer 'a..b'"),
    ({"arch_kwargs": {"in_channels": 2}}, "['in_channels']"),
    ({"arch_kwargs": {"f": object}}, "arch_kwargs['f'] value"),
    ({"extra": {"x": float("inf")}}, "extra['x'] value inf"),
    ({"extra": {1: "a"}}, "extra key 1"),
])  # fmt: skip
def test_validation_errors_name_field_and_value(changes, quoted):
    with pytest.raises(ValueError) as info:
        full_config(**changes)
    assert quoted in str(info.value)


def test_unknown_keys_are_rejected_by_name():
    data = full_config().to_dict()
    data["learning_rate"] = 0.1
    with pytest.raises(ValueError, match=r"unknown model config key\(s\) \['learning_rate'\]"):
        ModelConfig.from_dict(data)


def test_missing_required_keys_are_named():
    data = full_config().to_dict()
    del data["class_names"]
    with pytest.raises(ValueError, match=r"missing required key\(s\) \['class_names'\]"):
        ModelConfig.from_dict(data)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "null"])
def test_bad_json_raises_value_error(text):
    with pytest.raises(ValueError, match="model config"):
        ModelConfig.from_json(text)


def test_config_module_imports_neither_numpy_nor_torch():
    code = (
        "import sys, napari_medseg.config; "
        "bad = [m for m in ('numpy', 'torch') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_label_values_encode_and_decode_and_are_checked():
    import numpy as np

    config = full_config(extra={"label_values": [0, 3, 300]})
    labels = np.array([[0, 1], [2, 1]], np.uint8)
    written = config.encode_labels(labels)
    assert written.dtype == np.uint16 and written.tolist() == [[0, 3], [300, 3]]
    assert config.decode_labels(written).tolist() == labels.tolist()
    with pytest.raises(ValueError, match="label value 7 names no class"):
        config.decode_labels(np.array([0, 7]))
    plain = full_config()
    assert plain.label_values == (0, 1, 2) and plain.encode_labels(labels).dtype == np.uint8
    with pytest.raises(ValueError, match="names no class"):
        plain.decode_labels(np.array([3]))


@pytest.mark.parametrize(
    "values, message",
    [([0, 3], "2 entries"), ([1, 3, 4], "0 for background"), ([0, 3, 3], "distinct"), ([0, 3, -1], "-1"),
     ([0, 3, 70000], "70000"), ([0, 3, 2.5], "2.5")],
)  # fmt: skip
def test_bad_label_values_are_named(values, message):
    with pytest.raises(ValueError, match=message):
        full_config(extra={"label_values": values})


def test_context_offsets_come_from_millimetres_and_the_slice_spacing():
    base = {"architecture": "unet", "spatial_dims": 2, "class_names": ("background", "brain")}
    config = ModelConfig(**base, in_channels=3, target_spacing=(2.0, 1.0, 1.0), extra={"context_offsets_mm": [-4, 0, 4]})
    assert config.context_offsets == (-2, 0, 2)
    assert ModelConfig(**base, in_channels=1).context_offsets == (0,)
    with pytest.raises(ValueError, match=r"context_offsets_mm \[-4, 4\] do not match in_channels 3"):
        _ = ModelConfig(**base, in_channels=3, extra={"context_offsets_mm": [-4, 4]}).context_offsets
    with pytest.raises(ValueError, match="has 3 input channels but no context_offsets_mm"):
        _ = ModelConfig(**base, in_channels=3).context_offsets
