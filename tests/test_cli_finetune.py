"""``medseg finetune`` end to end with a tiny real bundle and toy files."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.cli import main
from napari_medseg.io import write_volume
from napari_medseg.models import load_model
from napari_medseg.models.bundle import read_meta
from napari_medseg.types import Geometry
from tests.tiny_models import tiny_bundle
from tests.training import single_thread, strokes, toy_volume  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def files(tmp_path):
    volume, truth = toy_volume()
    geometry = Geometry((1.0, 1.0, 1.0), (2.0, -3.0, 4.0))
    image = write_volume(tmp_path / "scan.nii.gz", volume.array, geometry)
    sparse = strokes(truth)
    labels = write_volume(tmp_path / "strokes.nii.gz", sparse, geometry)
    sparse[2, 9:12, 20:24] = 5
    lesion = write_volume(tmp_path / "lesion.nii.gz", sparse, geometry)
    shifted = write_volume(tmp_path / "shifted.nii.gz", strokes(truth), Geometry((1.0, 1.0, 1.0), (2.0, -3.0, 4.5)))
    seen = write_volume(tmp_path / "seen.nii.gz", truth.astype(np.uint8), geometry)
    return {"image": image, "labels": labels, "lesion": lesion, "shifted": shifted, "seen": seen}


@pytest.fixture
def bundle(tmp_path):
    return tiny_bundle(tmp_path / "models")


def test_finetune_writes_a_new_bundle_and_a_summary(files, bundle, tmp_path, capsys):
    out = tmp_path / "tuned"
    argv = ["finetune", "--image", str(files["image"]), "--labels", str(files["labels"]), "--model", str(bundle),
            "-o", str(out), "--steps", "4", "--lr", "0.01", "--batch", "2", "--device", "cpu", "--seed", "1"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "finetune: 100%" in captured.err  # the progress bar (not a terminal: every 10%)
    text = captured.out
    assert "4/4 steps (done)" in text and "loss:" in text and "->" in text
    assert "accuracy on annotated voxels:" in text and "Dice white matter" in text
    assert text.strip().endswith(f"bundle: {out}")
    meta = read_meta(out)
    assert meta["version"] == 2 and meta["training"]["steps"] == 4 and meta["training"]["seed"] == 1
    assert meta["training"]["annotated_voxels"]["CSF"] == 192
    assert load_model(out).config.class_names == ("background", "CSF", "grey matter", "white matter")


def test_new_class_and_default_location(files, bundle, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NAPARI_MEDSEG_HOME", str(tmp_path / "home"))
    argv = ["finetune", "--image", str(files["image"]), "--labels", str(files["lesion"]), "--model", str(bundle),
            "--steps", "2", "--new-class", "lesion", "--device", "cpu", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    written = list((tmp_path / "home" / "models").iterdir())
    assert len(written) == 1 and written[0].name.startswith("tiny-unet-ft-")
    assert load_model(written[0].name).config.class_names[-1] == "lesion"
    assert "Dice lesion" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("labels", "extra", "message"),
    [
        ("shifted", [], "not on the same grid"),
        ("lesion", [], "--new-class"),
        ("labels", ["--image", "{image}"], "one --labels per --image"),
        ("labels", ["--reference", "{shifted}"], "not on the same grid"),
        ("labels", ["--reference", "{seen}", "--distill-target", "network"], "distill_target='segmentation'"),
        ("labels", ["--refine"], "offers no refinement on request"),
    ],
)
def test_bad_inputs_exit_2_with_a_clear_message(files, bundle, tmp_path, capsys, labels, extra, message):
    argv = ["finetune", "--image", str(files["image"]), "--labels", str(files[labels]), "--model", str(bundle),
            "-o", str(tmp_path / "never"), "--steps", "1", "--device", "cpu", "--quiet"]  # fmt: skip
    argv += [a.format(**files) for a in extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_label_shape_mismatch_is_reported(files, bundle, tmp_path, capsys):
    small = write_volume(tmp_path / "small.nii.gz", np.zeros((4, 32, 32), np.uint8), Geometry((1.0,) * 3, (2.0, -3.0, 4.0)))
    argv = ["finetune", "--image", str(files["image"]), "--labels", str(small), "--model", str(bundle), "--quiet"]
    assert main(argv) == 2
    assert "not on the same grid" in capsys.readouterr().err


def test_the_corrected_segmentation_can_be_given_and_is_recorded(files, bundle, tmp_path):
    out = tmp_path / "tuned"
    argv = ["finetune", "--image", str(files["image"]), "--labels", str(files["labels"]), "--model", str(bundle),
            "--reference", str(files["seen"]), "-o", str(out), "--steps", "2", "--device", "cpu", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    training = read_meta(out)["training"]
    assert training["forgetting"]["distill_target"] == "segmentation" and training["distill_reference"] == "given"



def test_refine_keeps_toward_the_refined_segmentation_and_refuses_a_reference_as_well(files, tmp_path, capsys):
    refinement = {"prior_weight": 1.0, "keep_background": True, "on_request": True}
    bundle = tiny_bundle(tmp_path / "models", postprocess={"em_refine": refinement})
    argv = ["finetune", "--image", str(files["image"]), "--labels", str(files["labels"]), "--model", str(bundle),
            "--steps", "2", "--device", "cpu", "--quiet", "--refine"]  # fmt: skip
    assert main([*argv, "--reference", str(files["seen"]), "-o", str(tmp_path / "never")]) == 2
    assert "give one of them" in capsys.readouterr().err and not (tmp_path / "never").exists()
    assert main([*argv, "-o", str(tmp_path / "tuned")]) == 0
    training = read_meta(tmp_path / "tuned")["training"]
    assert training["distill_reference"] == "parent segmentation, refined" and training["forgetting"]["refine"]

# --- every check before the parent segments a scan or a step is trained ----------------------
def _never_run(*args, **kwargs):
    raise AssertionError("inference or training started although the fine-tune should have been refused first")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("all-zero labels", "no annotated voxel"),
        ("zero steps", "steps 0 must be at least 1"),
        ("output exists", "already exists"),
        ("output locked", "is in use by process"),
        ("output inside the parent", "inside the parent bundle"),
    ],
)
def test_refusals_come_before_any_inference_or_training(files, bundle, tmp_path, monkeypatch, capsys, case, message):
    from napari_medseg.io.folder_lock import FolderLock

    out = tmp_path / "tuned"
    labels, steps = files["labels"], "3"
    if case == "all-zero labels":
        labels = write_volume(tmp_path / "empty.nii.gz", np.zeros((8, 32, 32), np.uint8), Geometry((1.0, 1.0, 1.0), (2.0, -3.0, 4.0)))
        message = f"{labels}: {message}"
    elif case == "zero steps":
        steps = "0"
    elif case == "output exists":
        out.mkdir()
    elif case == "output inside the parent":
        out = bundle / "nested"
    monkeypatch.setattr("napari_medseg.training.finetune._steps", _never_run)
    argv = ["finetune", "--image", str(files["image"]), "--labels", str(labels), "--model", str(bundle),
            "-o", str(out), "--steps", steps, "--device", "cpu", "--quiet"]  # fmt: skip
    if case == "output locked":
        with FolderLock(tmp_path / ".tuned.lock"):
            assert main(argv) == 2
    else:
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert out.exists() == (case == "output exists")
    assert not (tmp_path / ".tuned.lock").exists()


def test_the_output_stays_reserved_during_the_run_and_is_released_after(files, bundle, tmp_path, monkeypatch):
    """The lock beside the new bundle is held while training runs (a rival fails) and removed after."""
    from napari_medseg.io.folder_lock import FolderLock, FolderLockedError
    from napari_medseg.training import finetune as engine

    out = tmp_path / "tuned"
    real_run = engine._steps
    rival = []

    def run_and_race(*args, **kwargs):
        with pytest.raises(FolderLockedError, match="is in use by process"):
            FolderLock(tmp_path / ".tuned.lock").acquire()
        rival.append("refused")
        return (yield from real_run(*args, **kwargs))

    monkeypatch.setattr(engine, "_steps", run_and_race)
    argv = ["finetune", "--image", str(files["image"]), "--labels", str(files["labels"]), "--model", str(bundle),
            "-o", str(out), "--steps", "1", "--device", "cpu", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert rival == ["refused"] and (out / "meta.json").is_file() and not (tmp_path / ".tuned.lock").exists()
