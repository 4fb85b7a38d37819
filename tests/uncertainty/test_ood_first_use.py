"""An external model's OOD threshold, calibrated on its first scans or from given ones, kept
in the user's data folder and found again when the model is opened. The model is a real,
tiny MONAI bundle (``tests/models/external/monai_bundle.py``), the scans CT-like volumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("monai", reason="the monai extra is part of the test environment (make setup)")

from napari_medseg.cli import main  # noqa: E402
from napari_medseg.inference import segment  # noqa: E402
from napari_medseg.io import read_volume, write_volume  # noqa: E402
from napari_medseg.models.external import open_model  # noqa: E402
from napari_medseg.models.external.ood_store import FIRST_USE_SCANS, store_file  # noqa: E402
from napari_medseg.types import Volume  # noqa: E402
from napari_medseg.uncertainty.ood import calibrate_ood  # noqa: E402
from napari_medseg.uncertainty.ood_first_use import ood_inspector  # noqa: E402
from tests.models.external.monai_bundle import oblique_scan, write_bundle  # noqa: E402


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return write_bundle(tmp_path_factory.mktemp("monai") / "bundle")


def scan(seed: int, modality: str = "CT") -> Volume:
    image, geometry = oblique_scan(seed)
    return Volume(image, geometry, modality=modality)


def assess(model, volume: Volume):
    """What ``medseg segment``, ``medseg batch`` and the panel do: segment, assess the plain prediction."""
    found = {}
    segment(volume, model, device="cpu", inspect=ood_inspector(model, volume, lambda ood: found.update(ood=ood)))
    return found["ood"]


def test_the_first_scans_calibrate_the_threshold_kept_after_reopening(home, bundle):
    model = open_model(bundle)
    scores = []
    for seed in range(FIRST_USE_SCANS):
        ood = assess(model, scan(seed))
        scores.append(ood.score)
        if seed < FIRST_USE_SCANS - 1:
            assert ood.calibrating == f"{seed + 1} of {FIRST_USE_SCANS} scans seen"
            assert ood.threshold is None and ood.signals[0].flag is None
            assert "calibrating" in ood.signals[0].detail and "calibrating" in json.dumps(ood.as_dict())
    threshold = calibrate_ood([round(s, 6) for s in scores])
    assert ood.calibrating is None and ood.threshold == pytest.approx(threshold, abs=1e-6)
    assert ood.signals[0].flag is False  # the scan that completed it is one of its own
    assert model.config.extra["ood"]["threshold"] == pytest.approx(threshold, abs=1e-6)  # this session's model has it
    stored = json.loads((home / "external").glob("*/ood.json").__next__().read_text())
    assert stored["model"] == str(bundle) and stored["kind"] == "monai"
    assert stored["ood"]["calibration"]["n"] == FIRST_USE_SCANS and "date" in stored["ood"]["calibration"]
    assert stored["ood"]["calibration"]["scores"] == pytest.approx(scores, abs=1e-6)

    reopened = open_model(bundle)
    assert reopened.config.extra["ood"]["threshold"] == stored["ood"]["threshold"]
    assert list(reopened.config.extra["ood"]["calibration"]["scores"]) == stored["ood"]["calibration"]["scores"]
    later = assess(reopened, scan(99))
    assert later.threshold == stored["ood"]["threshold"] and later.calibrating is None
    assert later.signals[0].detail.startswith(f"score {later.score:.3f} <= threshold")
    assert len(json.loads(store_file(bundle).read_text())["scans"]) == FIRST_USE_SCANS  # nothing recorded any more


def test_a_scan_counts_once(home, bundle, tmp_path):
    model = open_model(bundle)
    volume = scan(0)
    assert assess(model, volume).calibrating == f"1 of {FIRST_USE_SCANS} scans seen"
    assert assess(model, volume).calibrating == f"1 of {FIRST_USE_SCANS} scans seen"  # same voxels
    path = tmp_path / "ct.nii.gz"
    write_volume(path, volume.array, volume)
    assert assess(model, read_volume(path)).calibrating == f"2 of {FIRST_USE_SCANS} scans seen"
    assert assess(model, read_volume(path)).calibrating == f"2 of {FIRST_USE_SCANS} scans seen"  # same file
    assert {s["source"] for s in json.loads(store_file(bundle).read_text())["scans"].values()} == {"", "ct.nii.gz"}


def test_a_scan_another_test_flags_does_not_count(home, bundle):
    ood = assess(open_model(bundle), scan(0, modality="MR"))  # an MR given to a CT model
    assert ood.flag is True and ood.flagged_by == ["modality"]
    assert ood.calibrating == f"0 of {FIRST_USE_SCANS} scans seen"
    assert "not counted: flagged by modality" in ood.signals[0].detail
    assert not store_file(bundle).exists()


def test_another_model_calibrates_apart(home, bundle, tmp_path):
    assess(open_model(bundle), scan(0))
    other = open_model(write_bundle(tmp_path / "other", seed=1))
    assert other.ood_store != store_file(bundle)
    assert assess(other, scan(0)).calibrating == f"1 of {FIRST_USE_SCANS} scans seen"
    assert len(json.loads(store_file(bundle).read_text())["scans"]) == 1


def test_a_damaged_store_never_stops_a_segmentation(home, bundle, caplog):
    file = store_file(bundle)
    file.parent.mkdir(parents=True)
    file.write_text('{"scans": {}, "ood": {"score": "foreground_entropy", "threshold": "high"}}')
    model = open_model(bundle)
    assert "ood" not in model.config.extra and "starts again" in caplog.text
    assert assess(model, scan(0)).calibrating == f"1 of {FIRST_USE_SCANS} scans seen"


def test_the_cli_calibrates_from_given_scans_and_forgets(home, bundle, tmp_path, capsys):
    paths = []
    for seed in range(3):
        volume = scan(seed)
        paths.append(write_volume(tmp_path / f"ct{seed}.nii.gz", volume.array, volume))
    mr = scan(5, modality="MR")
    assert main(["models", "calibrate-ood", str(bundle), *map(str, paths), str(paths[0]), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "left out ct0.nii.gz: given twice" in out and "OOD threshold of" in out
    entry = json.loads(store_file(bundle).read_text())["ood"]
    assert entry["calibration"]["n"] == 3 and entry["threshold"] == pytest.approx(calibrate_ood(entry["calibration"]["scores"]), abs=1e-6)
    ood = assess(open_model(bundle), mr)
    assert ood.threshold == entry["threshold"] and ood.calibrating is None

    assert main(["models", "reset-ood", str(bundle)]) == 0
    assert "forgot the OOD calibration" in capsys.readouterr().out
    assert "ood" not in open_model(bundle).config.extra
    assert main(["models", "calibrate-ood", str(bundle), str(paths[0]), "--device", "cpu"]) == 2  # one scan: too few
    assert "at least 2 scans" in capsys.readouterr().err
    assert main(["models", "calibrate-ood", str(bundle), str(paths[0]), str(paths[0]), "--device", "cpu"]) == 2
    assert "at least 2 scans that no other test flags; got 1" in capsys.readouterr().err
    assert main(["models", "reset-ood", "not-a-model"]) == 2 and "neither an nnU-Net" in capsys.readouterr().err



def test_medseg_segment_reports_the_calibration(home, bundle, tmp_path):
    volume = scan(0)
    path = write_volume(tmp_path / "ct.nii.gz", volume.array, volume)
    assert main(["segment", str(path), "-o", str(tmp_path / "out"), "--model", str(bundle), "--device", "cpu"]) == 0
    report = json.loads((tmp_path / "out" / "ct_report.json").read_text())
    assert report["ood"]["calibrating"] == f"1 of {FIRST_USE_SCANS} scans seen"
    assert "calibrating: 1 of" in report["ood"]["signals"]["score"]["detail"]
