"""Versioned bundles: new folders with lineage and metrics; parents and resources untouched."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch

from napari_medseg.models import list_bundles, load_model, weights_sha256
from napari_medseg.models.bundle import read_config, read_meta
from napari_medseg.resources import resources_dir
from napari_medseg.training.finetune import run_finetune
from napari_medseg.training.versions import (
    default_version_path,
    descendants,
    latest_version,
    lineage,
    parent_identity,
    save_result,
    save_version,
)
from tests.tiny_models import tiny_bundle, tiny_model
from tests.training import single_thread, strokes, toy_volume  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")


def folder_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def parent_bundle(home):
    return tiny_bundle(home / "models", name="tiny-unet")


def _finetune(parent, steps=3, **options):
    volume, truth = toy_volume()
    return run_finetune(parent, [volume], [strokes(truth)], steps=steps, batch_size=2, device="cpu", **options)


def test_version_goes_to_the_user_folder_with_lineage_and_metrics(home, parent_bundle):
    before = folder_hashes(parent_bundle)
    parent = load_model("tiny-unet")
    result = _finetune(parent)
    path = save_result(result, parent)
    assert path.parent == home / "models"
    assert re.fullmatch(r"tiny-unet-ft-\d{8}-\d{6}", path.name)
    assert folder_hashes(parent_bundle) == before  # the parent bundle is byte-for-byte unchanged
    meta = read_meta(path)
    assert meta["parent_id"] == parent.bundle_meta["id"] and meta["parent_name"] == "tiny-unet"
    assert meta["parent_weights_sha256"] == weights_sha256(parent_bundle)
    assert meta["version"] == 2 and meta["name"] == path.name and meta["created"]
    training = meta["training"]
    assert training["steps"] == 3 and training["stopped"] is False and training["kind"] == "finetune"
    assert training["annotated_voxels"] == {"background": 320, "CSF": 192, "grey matter": 0, "white matter": 192}
    assert training["forgetting"] == {
        "method": "distill", "distill_weight": 1.0, "distill_target": "segmentation", "refine": False,
        "l2sp_weight": 0.01,
    }
    assert set(meta["metrics"]["annotated_after"]) == {"voxels", "accuracy", "dice", "mean_dice"}
    loaded = load_model(path.name)
    for key, value in result.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value.cpu())
    listed = {info.name: info for info in list_bundles()}
    assert listed[path.name].parent == parent.bundle_meta["id"] and listed[path.name].version == "2"


def test_versions_of_versions_chain_and_keep_short_names(home, parent_bundle):
    v1 = load_model("tiny-unet")
    v2_path = save_result(_finetune(v1, steps=1), v1)
    v2 = load_model(v2_path.name)
    v3_path = save_result(_finetune(v2, steps=1), v2)
    assert v3_path.name.startswith("tiny-unet-ft-") and v3_path.name.count("-ft-") == 1
    assert read_meta(v3_path)["version"] == 3
    assert [m["name"] for m in lineage(v3_path.name)] == [v3_path.name, v2_path.name, "tiny-unet"]
    assert [info.name for info in descendants("tiny-unet")] == [v2_path.name, v3_path.name]
    assert latest_version("tiny-unet").name == v3_path.name and latest_version(v3_path.name) is None
    named = save_version(_finetune(v2, steps=1).model, v2, name="my-name")
    assert named == home / "models" / "my-name" and read_meta(named)["parent_name"] == v2_path.name
    taken = default_version_path(v2)
    taken.mkdir()
    again = default_version_path(v2)
    assert again != taken and not again.exists()


def test_stopped_runs_write_a_valid_bundle_or_none_on_request(home, parent_bundle, tmp_path):
    parent = load_model("tiny-unet")
    result = _finetune(parent, steps=20, should_stop=lambda: True)
    assert result.stopped
    assert save_result(result, parent, save_on_stop=False) is None
    assert not any(p.name.startswith("tiny-unet-ft") for p in (home / "models").iterdir())
    path = save_result(result, parent, out=tmp_path / "chosen" / "stopped-version")
    assert path == tmp_path / "chosen" / "stopped-version"
    assert read_meta(path)["training"]["stopped"] is True and load_model(path) is not None
    assert [p.name for p in path.parent.iterdir()] == ["stopped-version"]  # no temporary left


def test_new_classes_are_saved_in_the_config(home, parent_bundle):
    parent = load_model("tiny-unet")
    volume, truth = toy_volume()
    sparse = strokes(truth)
    sparse[2, 9:12, 20:24] = 5
    result = run_finetune(parent, [volume], [sparse], steps=1, new_classes=["lesion"], device="cpu")
    path = save_result(result, parent, name="with-lesion")
    config = read_config(path)
    assert config.class_names[-1] == "lesion" and len(config.class_colors) == 5
    assert load_model("with-lesion").decoder.head.out_channels == 5
    assert read_meta(path)["training"]["new_classes"] == ["lesion"]


def test_resources_and_the_parent_folder_are_refused_and_nothing_is_overwritten(home, parent_bundle, tmp_path):
    parent = load_model("tiny-unet")
    model = _finetune(parent, steps=1).model
    resources = resources_dir()
    before = folder_hashes(resources)
    for target in (resources / "models" / "tuned", resources / "tuned", parent_bundle / "inside"):
        with pytest.raises(ValueError, match="never modified"):
            save_version(model, parent, out=target)
        assert not target.exists()
    assert folder_hashes(resources) == before
    other = tiny_bundle(home / "models", name="other")
    with pytest.raises(FileExistsError):
        save_version(model, parent, out=other)
    save_version(model, parent, out=tmp_path / "once")
    with pytest.raises(FileExistsError):
        save_version(model, parent, out=tmp_path / "once")


def test_models_built_in_memory_have_a_state_hash_and_no_parent_id():
    identity = parent_identity(tiny_model(0))
    assert identity["parent_id"] is None and identity["parent_version"] == 1
    assert re.fullmatch(r"[0-9a-f]{64}", identity["parent_weights_sha256"])
    assert identity == parent_identity(tiny_model(0))


def test_a_reserved_version_folder_refuses_rivals_until_released(tmp_path):
    from napari_medseg.io.folder_lock import FolderLockedError
    from napari_medseg.training.versions import reserve_version

    parent = tiny_model(0)
    target = tmp_path / "models" / "tiny-ft"
    with reserve_version(target, parent) as held:
        assert held == target and not target.exists()
        with pytest.raises(FolderLockedError, match=f"model bundle {target} is in use by process"):
            with reserve_version(target, parent):
                pass
        save_version(tiny_model(1), parent, out=held)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["tiny-ft"]  # lock file gone
    with reserve_version(default_version_path(parent, tmp_path / "models")) as default:
        assert default_version_path(parent, tmp_path / "models") != default  # a reserved name is skipped too
    with pytest.raises(FileExistsError, match="already exists"):
        with reserve_version(target, parent):
            pass
    with pytest.raises(ValueError, match="package's resources"):
        with reserve_version(resources_dir() / "models" / "new-version", parent):
            pass
