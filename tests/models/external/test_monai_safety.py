"""Bad input for MONAI bundles: hostile configs, malicious weights, unsafe archives, missing parts.

Each test spoils one thing of the zoo-style bundle in ``monai_bundle.py``; the error must
name it, and nothing in the bundle may run (marker files prove it).
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("monai", reason="the monai extra is part of the test environment (make setup)")

import torch  # noqa: E402

from napari_medseg.models import load_model  # noqa: E402
from napari_medseg.models.external import ExternalModelError, detect  # noqa: E402
from tests.models.external.monai_bundle import inference_config, write_bundle  # noqa: E402


def _with(change) -> dict:
    config = inference_config()
    change(config)
    return config


def _transforms(config: dict) -> list:
    return config["preprocessing"]["transforms"]


def test_detect_reads_names_only(tmp_path):
    bundle = write_bundle(tmp_path / "b", weights=None)
    assert detect(bundle) == "monai"
    archive = tmp_path / "b.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(bundle / "configs" / "metadata.json", "b/configs/metadata.json")
    assert detect(archive) == "monai"
    (tmp_path / "plain").mkdir()
    assert detect(tmp_path / "plain") is None and detect(tmp_path / "missing") is None


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda c: c["network_def"].update(channels="$__import__('os').system('touch {marker}')"),
         r"network_def#channels = .*is a Python expression"),
        (lambda c: c["network_def"].update(_target_="os.system"), r"network_def#_target_ = 'os.system' is not an allowed"),
        (lambda c: c["network_def"].update(_target_="monai.bundle.ConfigParser"), r"'monai.bundle.ConfigParser' is not an allowed"),
        (lambda c: c["network_def"].update(_target_="monai.networks.nets.vnet.UNet"), r"is not where MONAI defines"),
        (lambda c: c["network_def"].update(act={"_target_": "torch.nn.ReLU"}), r"network_def#act = .*is a component"),
        (lambda c: c.update(num_classes="%configs/other.json#classes"), r"network_def#out_channels -> @num_classes = .*macro"),
        (lambda c: c.update(num_classes="@loop", loop="@num_classes"), r"more than 16 deep"),
        (lambda c: c["network_def"].update(_requires_="$print('x')"), r"_requires_ = .*special key"),
        (lambda c: _transforms(c).insert(2, {"_target_": "Lambdad", "keys": "image", "func": "$lambda x: x"}),
         r"preprocessing#transforms#2#_target_ = 'Lambdad' is not a supported pre-transform"),
        (lambda c: _transforms(c)[3].update(dtype="$__import__('os').getcwd()"), r"transforms#3#dtype = .*is not a dtype"),
        (lambda c: _transforms(c)[4].update(a_min="$-200 * 1"), r"transforms#4#a_min = .*Python expression"),
        (lambda c: _transforms(c)[2].update(lazy=True), r"transforms#2#lazy = True is not an argument read here"),
        (lambda c: c["preprocessing"].update(transforms="$@pre + @post"), r"preprocessing#transforms = .*must be a list"),
        (lambda c: c["inferer"].update(_target_="monai.inferers.SaliencyInferer"), r"is not a supported inferer"),
        (lambda c: c["inferer"].update(roi_size=[16, 16]), r"inferer#roi_size = \[16, 16\] must be three"),
        (lambda c: c["postprocessing"]["transforms"][0].update(softmax=False, sigmoid=True), r"multi-label"),
        (lambda c: c.pop("inferer"), r"has no 'inferer'"),
        (lambda c: c["network_def"].update(spatial_dims=2), r"spatial_dims.*not supported"),
    ],
)  # fmt: skip
def test_hostile_configs_are_refused_by_key(tmp_path, change, named):
    marker = tmp_path / "ran"
    config = _with(change)
    if isinstance(config["network_def"].get("channels"), str):
        config["network_def"]["channels"] = config["network_def"]["channels"].format(marker=marker)
    bundle = write_bundle(tmp_path / "b", config)
    with pytest.raises(ExternalModelError, match=named):
        load_model(bundle)
    assert not marker.exists()


def test_the_zoo_expressions_in_unread_parts_are_left_alone(tmp_path):
    """``imports``, ``device``, ``network``, ``dataset``, ``evaluator``, ``initialize`` hold
    expressions that would run code; they are never evaluated, so a bundle with them opens."""
    marker = tmp_path / "ran"
    config = _with(lambda c: c.update(initialize=[f"$__import__('os').system('touch {marker}')"]))
    model = load_model(write_bundle(tmp_path / "b", config))
    assert model.config.extra["ignored"] == ("LoadImaged", "EnsureChannelFirstd", "EnsureTyped", "AsDiscreted", "SaveImaged")
    assert not marker.exists()


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_weights_are_refused_without_running_them(tmp_path):
    marker = tmp_path / "ran"
    bundle = write_bundle(tmp_path / "b", weights={"model": {}, "trainer": _RunsCode(marker)})
    with pytest.raises(ExternalModelError, match=r"model.pt is refused: unpickling it would run or import code"):
        load_model(bundle)
    assert not marker.exists()


def test_a_yaml_config_with_python_tags_is_refused(tmp_path):
    marker = tmp_path / "ran"
    bundle = write_bundle(tmp_path / "b", yaml=True)
    file = bundle / "configs" / "inference.yaml"
    file.write_text(f"evil: !!python/object/apply:os.system ['touch {marker}']\n" + file.read_text())
    with pytest.raises(ExternalModelError, match=r"inference.yaml could not be read"):
        load_model(bundle)
    assert not marker.exists()


def test_torchscript_only_and_mismatching_weights_are_named(tmp_path):
    bundle = write_bundle(tmp_path / "ts", weights=None)
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), bundle / "models" / "model.ts")
    with pytest.raises(ExternalModelError, match=r"only models/model.ts, a TorchScript program, not weights"):
        load_model(bundle)
    wrong = write_bundle(tmp_path / "wrong", weights={"model.0.conv.weight": torch.zeros(1), "extra.bias": torch.zeros(1)})
    with pytest.raises(ExternalModelError, match=r"does not fit network_def: missing \[.+\], unexpected \['extra.bias'"):
        load_model(wrong)
    empty = write_bundle(tmp_path / "empty", weights={"epoch": 3})
    with pytest.raises(ExternalModelError, match=r"no state dict of tensors"):
        load_model(empty)


def test_missing_parts_are_named(tmp_path):
    bundle = write_bundle(tmp_path / "b", weights=None)
    with pytest.raises(ExternalModelError, match=r"model.pt is missing"):
        load_model(bundle)
    (bundle / "configs" / "inference.json").unlink()
    with pytest.raises(ExternalModelError, match=r"configs/inference.json or configs/inference.yaml or .* is missing"):
        load_model(bundle)
    (bundle / "configs" / "metadata.json").unlink()
    (bundle / "configs" / "inference.json").write_text("{}")
    with pytest.raises(ExternalModelError, match=r"configs/metadata.json is missing"):
        load_model(bundle)


def test_unsafe_archives_are_refused(tmp_path):
    bundle = write_bundle(tmp_path / "b")
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(p for p in bundle.rglob("*") if p.is_file()):
            zf.write(file, file.relative_to(bundle).as_posix())
        zf.writestr("../escaped.txt", "x")
    assert detect(archive) == "monai"
    with pytest.raises(ExternalModelError, match=r"archive member '../escaped.txt' has an absolute or '..' path"):
        load_model(archive)
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_without_monai_the_error_names_the_extra(tmp_path, monkeypatch):
    """The import fails as it does when the package is absent (None in sys.modules)."""
    bundle = write_bundle(tmp_path / "b")
    monkeypatch.setitem(sys.modules, "monai", None)
    with pytest.raises(ExternalModelError, match=r"pip install 'napari-medseg\[monai\]'"):
        load_model(bundle)
