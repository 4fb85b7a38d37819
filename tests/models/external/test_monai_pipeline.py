"""This project's MONAI bundle inference against MONAI running the same bundle itself.

The reference is MONAI's own ``ConfigParser`` instantiating the bundle's ``preprocessing``
(``LoadImaged`` from the NIfTI file onwards), ``inferer``, ``network_def`` and the
``Activationsd`` + ``Invertd`` of its ``postprocessing``. Ours reads the same file with
SimpleITK, and must give labels that agree on >= 99.9% of voxels and probabilities within
1e-3, on a scan whose axes are flipped and tilted.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("monai", reason="the monai extra is part of the test environment (make setup)")

import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402

from napari_medseg.io import read_volume, write_volume  # noqa: E402
from napari_medseg.models import load_model  # noqa: E402
from napari_medseg.types import Volume  # noqa: E402
from tests.models.external.monai_bundle import CLASSES, oblique_scan, write_bundle  # noqa: E402


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> tuple[Path, Path]:
    """(the bundle folder, the scan's NIfTI file)."""
    root = tmp_path_factory.mktemp("monai")
    image, geometry = oblique_scan()
    scan = root / "scan.nii.gz"
    write_volume(scan, image, Volume(image, geometry, modality="CT"), kind="image")
    return write_bundle(root / "bundle"), scan


def monai_reference(bundle: Path, scan: Path) -> np.ndarray:
    """MONAI running the bundle's own config on the file: (K, z, y, x) probabilities."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(next((bundle / "configs").glob("inference.*"))))
    parser["postprocessing"]["transforms"] = parser["postprocessing"]["transforms"][:2]  # Activationsd, Invertd
    preprocessing = parser.get_parsed_content("preprocessing")
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    data = preprocessing({"image": str(scan)})
    with torch.no_grad():
        data["pred"] = parser.get_parsed_content("inferer")(data["image"][None], network.eval())[0]
    data = parser.get_parsed_content("postprocessing")(data)
    return data["pred"].numpy().transpose(0, 3, 2, 1)


def test_probabilities_match_monai_running_the_bundle(case):
    from napari_medseg.inference import segment

    bundle, scan = case
    model = load_model(bundle)
    assert model.config.class_names == CLASSES and model.config.modality == "CT"
    assert model.config.patch_size == (16, 16, 16) and model.config.target_spacing == (2.0, 1.0, 1.3)
    source = read_volume(scan)
    result = segment(source, model, device="cpu")
    theirs = monai_reference(bundle, scan)
    ours = np.moveaxis(result.probabilities, -1, 0)
    assert ours.shape == theirs.shape == (3, *source.shape)
    assert np.abs(ours - theirs).max() < 1e-3
    agreement = (result.labels == theirs.argmax(0)).mean()
    assert agreement >= 0.999, agreement
    assert len(np.unique(result.labels)) == 3  # the comparison is not of a constant map


def test_yaml_zip_and_nested_weights_give_the_same(case, tmp_path):
    bundle, scan = case
    source = read_volume(scan)
    expected = load_model(bundle).predict_volume(source.array, source.spacing, geometry=source.geometry)
    from tests.models.external.monai_bundle import INFERENCE

    yaml_bundle = write_bundle(tmp_path / "yaml", INFERENCE, weights="nested", yaml=True)
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(p for p in bundle.rglob("*") if p.is_file()):
            zf.write(file, f"spleen_bundle/{file.relative_to(bundle).as_posix()}")
    for path in (yaml_bundle, archive):
        model = load_model(path)
        assert model.bundle_path == path
        np.testing.assert_array_equal(model.predict_volume(source.array, source.spacing, geometry=source.geometry), expected)


def test_progress_and_stop_per_window_batch(case):
    from napari_medseg.control import Cancelled

    bundle, scan = case
    source = read_volume(scan)
    model = load_model(bundle)
    seen = []
    model.predict_volume(source.array, source.spacing, geometry=source.geometry, progress=lambda d, t: seen.append((d, t)))
    assert len(seen) > 1 and seen[-1][0] == seen[-1][1] == len(seen)
    calls = []
    with pytest.raises(Cancelled):
        model.predict_volume(source.array, source.spacing, geometry=source.geometry,
                             progress=lambda d, t: calls.append(d), should_stop=lambda: len(calls) >= 2)  # fmt: skip
    assert len(calls) == 2


def test_cli_segment_keeps_the_scan_geometry_and_models_lists_bundles(case, tmp_path, monkeypatch, capsys):
    """``medseg segment --model BUNDLE`` writes labels on the scan's exact grid (header
    bit for bit); ``medseg models`` lists bundles under ``$NAPARI_MEDSEG_MONAI_BUNDLES``."""
    from napari_medseg.cli import main

    bundle, scan = case
    assert main(["segment", str(scan), "-o", str(tmp_path / "out"), "--model", str(bundle), "--device", "cpu"]) == 0
    written, source = sitk.ReadImage(str(tmp_path / "out" / "scan_seg.nii.gz")), sitk.ReadImage(str(scan))
    assert written.GetSize() == source.GetSize()
    assert written.GetOrigin() == source.GetOrigin() and written.GetSpacing() == source.GetSpacing()
    assert written.GetDirection() == source.GetDirection()
    agreement = (sitk.GetArrayFromImage(written) == monai_reference(bundle, scan).argmax(0)).mean()
    assert agreement >= 0.999, agreement
    capsys.readouterr()
    monkeypatch.setenv("NAPARI_MEDSEG_MONAI_BUNDLES", str(bundle.parent))
    assert main(["models", "--json"]) == 0
    rows = [row for row in json.loads(capsys.readouterr().out) if row.get("kind") == "monai"]
    assert [(row["name"], row["architecture"], row["classes"]) for row in rows] == [("bundle", "monai-UNet", list(CLASSES))]


def test_steps_it_lacks_are_refused_naming_monai(case, tmp_path):
    from napari_medseg.explain.volume import grad_cam_volume
    from napari_medseg.models.external import ExternalModelError
    from napari_medseg.training.finetune import finetune

    bundle, scan = case
    source = read_volume(scan)
    model = load_model(bundle)
    with pytest.raises(ExternalModelError, match="Grad-CAM of an external model runs on the whole scan its own way: use .*explain_scan"):
        grad_cam_volume(model, source.array, target_class=1)
    with pytest.raises(ValueError, match="new classes \\['lesion'\\] cannot be added to monai models"):
        finetune(model, [source], [np.ones(source.shape, np.uint8)], steps=1, new_classes=["lesion"])
