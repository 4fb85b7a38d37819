"""Bundles: atomic save, exact reload, and every bad input refused with a BundleError."""

from __future__ import annotations

import json
import pathlib
import pickle
import zipfile

import pytest
import torch

from napari_medseg.models import (
    BundleError,
    archive_bundle,
    build_model,
    load_bundle,
    save_bundle,
    weights_sha256,
)

pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")


@pytest.fixture
def model(make_config):
    torch.manual_seed(0)
    return build_model(make_config("unet", 2)).eval()


@pytest.fixture
def bundle(model, tmp_path):
    return save_bundle(model, tmp_path / "tiny", meta={"version": 3, "metrics": {"dice": 0.5}})


def outputs(model, shape=(1, 3, 19, 21)):
    torch.manual_seed(1)
    with torch.no_grad():
        return model.eval()(torch.randn(*shape))


def drop_checksum(bundle):
    meta = json.loads((bundle / "meta.json").read_text())
    del meta["weights_sha256"]
    (bundle / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("architecture", ["unet", "transunet"])
@pytest.mark.parametrize("dims", [2, 3])
def test_round_trip_gives_identical_outputs(make_config, tmp_path, architecture, dims):
    original = build_model(make_config(architecture, dims)).eval()
    path = save_bundle(original, tmp_path / "b", meta={})
    loaded = load_bundle(path)
    shape = (1, original.config.in_channels, *(11,) * dims)
    assert torch.equal(outputs(loaded, shape), outputs(original, shape))
    assert loaded.config == original.config
    assert loaded.bundle_path == path
    assert not loaded.training


def test_meta_is_merged_with_standard_keys(bundle, model):
    loaded = load_bundle(bundle)
    meta = loaded.bundle_meta
    assert meta["version"] == 3 and meta["metrics"] == {"dice": 0.5}
    assert meta["name"] == "tiny" and meta["parent_id"] is None
    assert meta["parent_weights_sha256"] is None and meta["training"] == {}
    assert len(meta["id"]) == 32 and "T" in meta["created"]
    assert meta["weights_sha256"] == weights_sha256(bundle) == weights_sha256(bundle / "weights.pt")
    assert meta["weights_dtype"] == "float32"
    assert sorted(p.name for p in bundle.iterdir()) == ["config.json", "meta.json", "weights.pt"]


def test_half_precision_bundle_is_smaller_and_loads_as_float32(model, bundle, tmp_path):
    half = save_bundle(model, tmp_path / "half", meta={}, half=True)
    assert (half / "weights.pt").stat().st_size < 0.75 * (bundle / "weights.pt").stat().st_size
    stored = torch.load(half / "weights.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    loaded = load_bundle(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    torch.testing.assert_close(outputs(loaded), outputs(model), atol=2e-2, rtol=2e-2)


def test_existing_bundle_is_never_overwritten(model, bundle):
    before = weights_sha256(bundle)
    with pytest.raises(FileExistsError, match="tiny"):
        save_bundle(model, bundle, meta={})
    assert weights_sha256(bundle) == before
    assert [p.name for p in bundle.parent.iterdir()] == ["tiny"]  # no temporary folder left


def test_save_refuses_model_without_config_and_non_json_meta(model, tmp_path):
    with pytest.raises(BundleError, match="no .config"):
        save_bundle(torch.nn.Linear(2, 2), tmp_path / "x", meta={})
    with pytest.raises(BundleError, match="not JSON data"):
        save_bundle(model, tmp_path / "y", meta={"when": object()})
    assert list(tmp_path.iterdir()) == []


class Evil:
    """Unpickling this would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickled_code_is_never_run(bundle, tmp_path, writer):
    marker = tmp_path / "pwned"
    payload = {"encoder.levels.0.block.conv1.weight": Evil(marker)}
    if writer == "torch.save":
        torch.save(payload, bundle / "weights.pt")
    else:
        with open(bundle / "weights.pt", "wb") as f:
            pickle.dump(payload, f, protocol=2)
    drop_checksum(bundle)  # else the checksum refuses the file before torch.load sees it
    with pytest.raises(BundleError, match="refused to unpickle") as info:
        load_bundle(bundle)
    assert str(bundle) in str(info.value)
    assert "weights_only" not in str(info.value)  # no advice to switch the check off
    assert not marker.exists()


def test_tampered_weights_fail_the_checksum(bundle, tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"x": Evil(marker)}, bundle / "weights.pt")
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(bundle)
    assert not marker.exists()


@pytest.mark.parametrize("content", [[torch.zeros(2)], {"a": 1.0}, torch.zeros(3)])
def test_weights_must_be_a_state_dict_of_tensors(bundle, content):
    torch.save(content, bundle / "weights.pt")
    drop_checksum(bundle)
    with pytest.raises(BundleError, match="not a state dict of tensors"):
        load_bundle(bundle)


def test_garbage_weights_file(bundle):
    (bundle / "weights.pt").write_bytes(b"not a checkpoint")
    drop_checksum(bundle)
    with pytest.raises(BundleError, match="weights.pt"):
        load_bundle(bundle)


def test_missing_and_unexpected_keys_are_listed(bundle):
    state = torch.load(bundle / "weights.pt", weights_only=True)
    del state["decoder.head.weight"]
    state["decoder.extra.weight"] = torch.zeros(1)
    torch.save(state, bundle / "weights.pt")
    drop_checksum(bundle)
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    message = str(info.value)
    assert "missing keys (1): decoder.head.weight" in message
    assert "unexpected keys (1): decoder.extra.weight" in message


def test_shape_mismatch_is_listed(bundle):
    config = json.loads((bundle / "config.json").read_text())
    config["arch_kwargs"]["features"] = [4, 8, 32]
    (bundle / "config.json").write_text(json.dumps(config))
    expected = r"shape mismatches \(\d+\): .*\(16, 8, 3, 3\) != \(32, 8, 3, 3\)"
    with pytest.raises(BundleError, match=expected):
        load_bundle(bundle)


@pytest.mark.parametrize("name", ["config.json", "weights.pt", "meta.json"])
def test_missing_file_is_named(bundle, name):
    (bundle / name).unlink()
    with pytest.raises(BundleError, match=f"{name} is missing") as info:
        load_bundle(bundle)
    assert str(bundle) in str(info.value)


def test_missing_folder(tmp_path):
    with pytest.raises(BundleError, match="no such bundle"):
        load_bundle(tmp_path / "nothing")


@pytest.mark.parametrize("name", ["config.json", "meta.json"])
def test_invalid_json_is_named(bundle, name):
    (bundle / name).write_text("{oops")
    with pytest.raises(BundleError, match=f"{name} is not valid JSON"):
        load_bundle(bundle)


@pytest.mark.parametrize("change, quoted", [
    ({"spatial_dims": 4}, "spatial_dims 4"),
    ({"architecture": "resnet"}, "architecture 'resnet' is unknown"),
    ({"arch_kwargs": {"features": [4, 8, 16], "norm": "layer"}}, "norm 'layer'"),
    ({"secret": 1}, "['secret']"),
])  # fmt: skip
def test_invalid_config_is_named(bundle, change, quoted):
    config = json.loads((bundle / "config.json").read_text())
    (bundle / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(BundleError, match="config.json") as info:
        load_bundle(bundle)
    assert quoted in str(info.value)


def test_zip_round_trip(model, bundle, tmp_path):
    archive = archive_bundle(bundle, tmp_path / "tiny.zip")
    loaded = load_bundle(archive)
    assert loaded.bundle_path == archive
    assert torch.equal(outputs(loaded), outputs(model))
    with pytest.raises(FileExistsError):
        archive_bundle(bundle, archive)


def test_zip_with_files_at_top_level(model, bundle, tmp_path):
    archive = tmp_path / "flat.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in bundle.iterdir():
            zf.write(file, file.name)
    assert torch.equal(outputs(load_bundle(archive)), outputs(model))


@pytest.mark.parametrize("member", ["../escaped.txt", "tiny/../../escaped.txt", "/tmp/escaped.txt"])
def test_zip_with_unsafe_member_is_refused(bundle, tmp_path, member):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in bundle.iterdir():
            zf.write(file, f"tiny/{file.name}")
        zf.writestr(member, "gotcha")
    with pytest.raises(BundleError, match="absolute or '..' path") as info:
        load_bundle(archive)
    assert str(archive) in str(info.value)
    assert not (tmp_path / "escaped.txt").exists()


def test_not_a_zip(tmp_path):
    fake = tmp_path / "fake.zip"
    fake.write_text("hello")
    with pytest.raises(BundleError, match="not a readable zip"):
        load_bundle(fake)


def test_load_onto_requested_device(bundle):
    assert next(load_bundle(bundle, device="cpu").parameters()).device.type == "cpu"
    with pytest.raises(ValueError, match="device 'tpu9'"):
        load_bundle(bundle, device="tpu9")


def test_bundle_error_pickles_with_its_fields():
    from napari_medseg.models.bundle import BundleError

    error = pickle.loads(pickle.dumps(BundleError("/models/x", "weights.pt is missing")))
    assert isinstance(error, BundleError) and (error.path, error.problem) == ("/models/x", "weights.pt is missing")
    assert str(error) == "model bundle /models/x: weights.pt is missing"
