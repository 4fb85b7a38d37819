"""The store of an external model's OOD calibration: where it lies, what names it, what
survives a damaged file. The models here are real MONAI bundles (``monai_bundle.py``)."""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import pytest

from napari_medseg.models.external import ExternalModelError
from napari_medseg.models.external.ood_store import (
    attach_store,
    forget,
    model_digest,
    read_store,
    record_score,
    store_file,
)
from napari_medseg.uncertainty.ood import ood_calibration
from tests.models.external.monai_bundle import write_bundle

pytest.importorskip("monai", reason="the monai extra is part of the test environment (make setup)")


@pytest.fixture
def bundle(tmp_path) -> Path:
    return write_bundle(tmp_path / "bundle")


def record(file: Path, key: str, score: float, needed: int = 3) -> dict:
    return record_score(file, key, score, calibrate=ood_calibration, model="bundle", kind="monai", needed=needed)


def test_the_store_lies_under_the_user_data_folder_named_by_the_model_files(home, bundle, tmp_path):
    file = store_file(bundle)
    assert file == home / "external" / model_digest(bundle) / "ood.json"
    assert not file.exists()  # nothing is written by looking
    other = write_bundle(tmp_path / "other", seed=1)  # other weights: another model
    assert model_digest(other) != model_digest(bundle)
    copy = write_bundle(tmp_path / "copy")  # the same files elsewhere: the same model
    assert model_digest(copy) == model_digest(bundle)
    (copy / "configs" / "inference.json").write_text((copy / "configs" / "inference.json").read_text() + "\n")
    assert model_digest(copy) != model_digest(bundle)


def test_a_zip_bundle_is_named_by_its_bytes(home, bundle, tmp_path):
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for file in bundle.rglob("*"):
            zipped.write(file, Path("bundle") / file.relative_to(bundle))
    assert len(model_digest(archive)) == 64
    assert model_digest(archive) != model_digest(bundle)
    with pytest.raises(ExternalModelError):
        model_digest(tmp_path / "not-a-model")


def test_scores_accumulate_once_per_scan_then_the_threshold_is_kept(home, bundle):
    file = store_file(bundle)
    assert record(file, "a", 0.1)["scans"].keys() == {"a"}
    assert len(record(file, "a", 0.5)["scans"]) == 1  # the same scan again: not counted
    assert "ood" not in record(file, "b", 0.12)
    data = record(file, "c", 0.11)
    assert data["ood"] == ood_calibration([0.1, 0.12, 0.11])
    assert record(file, "d", 0.9) == data  # calibrated: nothing changes any more
    written = json.loads(file.read_text())
    assert (written["kind"], written["needed"], written["digest"]) == ("monai", 3, file.parent.name)
    assert written["ood"]["threshold"] == data["ood"]["threshold"]


@pytest.mark.parametrize(
    "content",
    ["{not json", "[]", json.dumps({"scans": {"a": {"score": "high"}}}),
     json.dumps({"scans": {}, "ood": {"score": "foreground_entropy", "threshold": float("nan")}}),
     json.dumps({"scans": {}, "ood": {"score": "foreground_entropy", "threshold": -1}})],
)  # fmt: skip
def test_a_damaged_store_is_reported_and_calibration_starts_again(home, bundle, content, caplog):
    file = store_file(bundle)
    file.parent.mkdir(parents=True)
    file.write_text(content)
    with caplog.at_level(logging.WARNING):
        assert read_store(file) == {"scans": {}}
    assert "starts again" in caplog.text and str(file) in caplog.text
    model = attach_store(_Model(), bundle)  # opening never fails on it
    assert "ood" not in model.config.extra
    assert record(file, "a", 0.1)["scans"].keys() == {"a"}  # the next recording replaces it
    assert json.loads(file.read_text())["scans"]["a"]["score"] == 0.1


def test_forget_removes_the_store(home, bundle):
    file = store_file(bundle)
    assert forget(file) is False
    record(file, "a", 0.1)
    assert forget(file) is True
    assert not file.parent.exists()


def test_attach_store_puts_the_threshold_into_the_config(home, bundle):
    file = store_file(bundle)
    for key, score in zip("abc", (0.1, 0.12, 0.11)):
        record(file, key, score)
    model = attach_store(_Model(), bundle)
    assert model.ood_store == file
    assert model.config.extra["ood"] == ood_calibration([0.1, 0.12, 0.11])
    assert model.config.extra["external"] == "monai"  # the rest of the config as it was


def test_an_unusable_user_folder_leaves_the_model_without_a_store(tmp_path, monkeypatch, bundle, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("NAPARI_MEDSEG_HOME", str(blocker))  # a file where the folder should be
    model = attach_store(_Model(), tmp_path / "nowhere")
    assert model.ood_store is None and "cannot be found" in caplog.text
    with pytest.raises(OSError):
        record(store_file(bundle), "a", 0.1)


class _Model:
    """What :func:`attach_store` needs of an opened model: a config."""

    def __init__(self) -> None:
        from napari_medseg.config import ModelConfig

        self.config = ModelConfig(architecture="monai", spatial_dims=3, in_channels=1,
                                  class_names=("background", "liver"), extra={"external": "monai"})  # fmt: skip
