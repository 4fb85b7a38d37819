"""Catalog: shipped and user bundles by name, with NAPARI_MEDSEG_HOME in a temporary folder."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from napari_medseg.models import BundleError, archive_bundle, build_model, catalog, save_bundle


@pytest.fixture
def shipped(tmp_path, monkeypatch, make_config):
    folder = tmp_path / "resources" / "models"
    folder.mkdir(parents=True)
    monkeypatch.setattr(catalog, "shipped_models_dir", lambda: folder)
    save_bundle(build_model(make_config("unet", 2)), folder / "brain-2d", meta={})
    return folder


def save_user(make_config, name, architecture="unet", **meta):
    model = build_model(make_config(architecture, 2))
    return save_bundle(model, catalog.user_models_dir() / name, meta=meta)


def test_user_dir_follows_environment(home):
    assert catalog.user_data_dir() == home
    assert catalog.user_models_dir() == home / "models"


def test_user_dir_defaults_to_platform_folder(monkeypatch):
    monkeypatch.delenv("NAPARI_MEDSEG_HOME", raising=False)
    assert "napari-medseg" in str(catalog.user_models_dir())


def test_empty_catalog(home, monkeypatch):
    monkeypatch.setattr(catalog, "shipped_models_dir", lambda: None)
    assert catalog.list_bundles() == []
    with pytest.raises(BundleError, match="unknown model; available: none installed"):
        catalog.resolve_bundle("brain")


def test_list_shipped_then_user_bundles(home, shipped, make_config):
    save_user(make_config, "zeta", version=2, parent_id="abc")
    save_user(make_config, "alpha", architecture="transunet")
    infos = catalog.list_bundles()
    assert [(i.name, i.shipped) for i in infos] == [
        ("brain-2d", True), ("alpha", False), ("zeta", False)
    ]
    alpha, zeta = infos[1], infos[2]
    assert alpha.architecture == "transunet" and alpha.classes == ("background", "brain", "lesion")
    assert zeta.version == "2" and zeta.parent == "abc" and zeta.path == home / "models" / "zeta"


def test_unreadable_bundles_and_temporary_folders_are_skipped(home, shipped, make_config):
    broken = save_user(make_config, "broken")
    (broken / "config.json").write_text("{")
    hidden = home / "models" / ".half-written.tmp-1234"
    hidden.mkdir()
    (hidden / "config.json").write_text("{}")
    assert [i.name for i in catalog.list_bundles()] == ["brain-2d"]


def test_resolve_paths_and_names(home, shipped, make_config, tmp_path):
    user = save_user(make_config, "mine")
    assert catalog.resolve_bundle("mine") == user
    assert catalog.resolve_bundle("brain-2d") == shipped / "brain-2d"
    assert catalog.resolve_bundle(user) == user
    zipped = archive_bundle(user, tmp_path / "mine.zip")
    assert catalog.resolve_bundle(str(zipped)) == zipped


def test_shipped_name_wins_over_user_name(home, shipped, make_config):
    save_user(make_config, "brain-2d")
    assert catalog.resolve_bundle("brain-2d") == shipped / "brain-2d"


@pytest.mark.parametrize("name", ["nope", "../brain-2d", "/no/such/folder"])
def test_unknown_names_list_what_is_available(home, shipped, make_config, name):
    save_user(make_config, "mine")
    with pytest.raises(BundleError) as info:
        catalog.resolve_bundle(name)
    assert name in str(info.value)
    if "/" not in name:
        assert "['brain-2d', 'mine']" in str(info.value)


def test_load_model_by_name(home, shipped, make_config):
    model = catalog.load_model("brain-2d", device="auto")
    assert model.config.architecture == "unet"
    assert model.bundle_path == shipped / "brain-2d"
    expected = "cuda" if torch.cuda.is_available() else None
    if expected:
        assert next(model.parameters()).device.type == expected
    with torch.no_grad():
        x = torch.randn(1, 3, 12, 12, device=next(model.parameters()).device)
        assert model(x).shape == (1, 3, 12, 12)


def test_rename_user_bundle(home, shipped, make_config):
    old = save_user(make_config, "draft")
    new = catalog.rename_bundle("draft", "final")
    assert new == home / "models" / "final" and not old.exists()
    assert json.loads((new / "meta.json").read_text())["name"] == "final"
    assert catalog.load_model("final").bundle_meta["name"] == "final"


def test_rename_refusals(home, shipped, make_config):
    save_user(make_config, "a")
    save_user(make_config, "b")
    with pytest.raises(FileExistsError, match="'b'"):
        catalog.rename_bundle("a", "b")
    with pytest.raises(FileExistsError, match="'brain-2d'"):
        catalog.rename_bundle("a", "brain-2d")
    with pytest.raises(BundleError, match="shipped"):
        catalog.rename_bundle("brain-2d", "c")
    with pytest.raises(BundleError, match="new name"):
        catalog.rename_bundle("a", "../c")
    with pytest.raises(BundleError, match=r"no user model of that name; user models: \['a', 'b'\]"):
        catalog.rename_bundle("zzz", "c")


def test_delete_user_bundle_only(home, shipped, make_config):
    path = save_user(make_config, "old")
    catalog.delete_bundle("old")
    assert not path.exists()
    with pytest.raises(BundleError, match="cannot delete a shipped model"):
        catalog.delete_bundle("brain-2d")
    assert (shipped / "brain-2d" / "weights.pt").is_file()
    with pytest.raises(BundleError, match="not a bundle name"):
        catalog.delete_bundle("../brain-2d")


def test_shipped_list_is_empty_without_resources_models(home, monkeypatch, tmp_path):
    from napari_medseg import resources

    monkeypatch.setattr(resources, "resources_dir", lambda: tmp_path / "no-models-here")
    assert catalog.shipped_models_dir() is None


def test_package_exposes_load_model_lazily_without_torch():
    code = (
        "import sys, napari_medseg; "
        "assert 'torch' not in sys.modules; "
        "f = napari_medseg.load_model; "
        "from napari_medseg.models.catalog import load_model; "
        "assert f is load_model"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
