"""Bad input for nnU-Net model folders: hostile plans.json, malicious checkpoints, missing parts.

The plans below follow what nnU-Net 2.5+ writes for a 3d_fullres configuration (its
``ExperimentPlanner``); each test spoils one field.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_medseg.models.external import ExternalModelError, detect
from napari_medseg.models.external.checkpoint import load_checkpoint
from napari_medseg.models.external.nnunet_plans import read_nnunet_folder

PLANS = {
    "dataset_name": "Dataset901_Tiny",
    "plans_name": "nnUNetPlans",
    "original_median_spacing_after_transp": [2.5, 1.0, 1.2],
    "original_median_shape_after_transp": [14, 30, 26],
    "image_reader_writer": "SimpleITKIO",
    "transpose_forward": [0, 1, 2],
    "transpose_backward": [0, 1, 2],
    "configurations": {
        "3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres",
            "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2,
            "patch_size": [16, 32, 32],
            "median_image_size_in_voxels": [14.0, 30.0, 26.0],
            "spacing": [2.5, 1.0, 1.2],
            "normalization_schemes": ["CTNormalization"],
            "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
            "architecture": {
                "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                "arch_kwargs": {
                    "n_stages": 3,
                    "features_per_stage": [4, 8, 16],
                    "conv_op": "torch.nn.modules.conv.Conv3d",
                    "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]],
                    "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
                    "n_conv_per_stage": [2, 2, 2],
                    "n_conv_per_stage_decoder": [2, 2],
                    "conv_bias": True,
                    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                    "norm_op_kwargs": {"eps": 1e-05, "affine": True},
                    "dropout_op": None,
                    "dropout_op_kwargs": None,
                    "nonlin": "torch.nn.LeakyReLU",
                    "nonlin_kwargs": {"inplace": True},
                },
                "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
            },
            "batch_dice": False,
        }
    },
    "experiment_planner_used": "ExperimentPlanner",
    "label_manager": "LabelManager",
    "foreground_intensity_properties_per_channel": {
        "0": {"max": 400.0, "mean": 120.0, "median": 40.0, "min": -200.0, "percentile_00_5": -120.0,
              "percentile_99_5": 330.0, "std": 140.0}  # fmt: skip
    },
}
DATASET = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "bone": 1, "fat": 2}, "numTraining": 4,
           "file_ending": ".nii.gz"}  # fmt: skip


def make_folder(root: Path, plans: dict = PLANS, dataset: dict = DATASET, checkpoint: object = None) -> Path:
    folder = root / "Dataset901_Tiny" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset))
    torch.save(checkpoint if checkpoint is not None else {"network_weights": {}}, folder / "fold_0" / "checkpoint_final.pth")
    return folder


def spoiled(path: tuple, value) -> dict:
    plans = copy.deepcopy(PLANS)
    target = plans
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return plans


ARCH = ("configurations", "3d_fullres", "architecture")


def test_a_well_formed_folder_is_read(tmp_path):
    folder = make_folder(tmp_path)
    assert detect(folder) == "nnunet"
    info = read_nnunet_folder(folder)
    assert info.class_names == ("background", "bone", "fat")
    assert info.label_values == (0, 1, 2)
    assert info.folds == ("0",) and info.patch_size == (16, 32, 32) and info.modality == "CT"
    assert (info.trainer, info.plans_name, info.configuration) == ("nnUNetTrainer", "nnUNetPlans", "3d_fullres")


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ((*ARCH, "network_class_name"), "os.system", "'os.system'"),
        ((*ARCH, "network_class_name"), "dynamic_network_architectures.architectures.primus.Primus", "primus.Primus"),
        ((*ARCH, "arch_kwargs", "conv_op"), "subprocess.Popen", "'subprocess.Popen'"),
        ((*ARCH, "arch_kwargs", "nonlin"), "builtins.eval", "'builtins.eval'"),
        ((*ARCH, "arch_kwargs", "norm_op_kwargs"), "posix.system", "'norm_op_kwargs'"),
        ((*ARCH, "_kw_requires_import"), ["conv_op", "norm_op_kwargs"], "'norm_op_kwargs'"),
        (("configurations", "3d_fullres", "preprocessor_name"), "EvilPreprocessor", "'EvilPreprocessor'"),
        (("configurations", "3d_fullres", "resampling_fn_data"), "os.system", "resampling_fn_data 'os.system'"),
        (("configurations", "3d_fullres", "normalization_schemes"), ["PickledNormalization"], "'PickledNormalization'"),
        (("label_manager",), "os.popen", "'os.popen'"),
        (("configurations", "3d_fullres", "patch_size"), [16, 32, 10**7], "patch_size"),
        (("transpose_backward",), [0, 2, 1], "transpose_backward"),
    ],
)
def test_hostile_plans_are_refused_naming_the_value(tmp_path, path, value, named):
    folder = make_folder(tmp_path, plans=spoiled(path, value))
    with pytest.raises(ExternalModelError, match="plans.json") as err:
        read_nnunet_folder(folder)
    assert named in str(err.value)
    assert str(folder) in str(err.value)


def test_inheritance_loop_and_missing_configuration_are_refused(tmp_path):
    plans = copy.deepcopy(PLANS)
    plans["configurations"]["3d_fullres"]["inherits_from"] = "3d_fullres"
    with pytest.raises(ExternalModelError, match="inherits in a loop"):
        read_nnunet_folder(make_folder(tmp_path / "a", plans=plans))
    plans = copy.deepcopy(PLANS)
    plans["configurations"] = {"2d": plans["configurations"]["3d_fullres"]}
    with pytest.raises(ExternalModelError, match="no configuration '3d_fullres'"):
        read_nnunet_folder(make_folder(tmp_path / "b", plans=plans))


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ({**DATASET, "channel_names": {"0": "T1", "1": "T2"}}, "one input channel"),
        ({**DATASET, "labels": {"background": 0, "whole": [1, 2]}}, "regions"),
        ({**DATASET, "labels": {"background": 1, "bone": 2}}, "0 for background"),
    ],
)
def test_unsupported_datasets_are_refused(tmp_path, dataset, message):
    with pytest.raises(ExternalModelError, match=message):
        read_nnunet_folder(make_folder(tmp_path, dataset=dataset))


class _RunsCode:
    """Unpickling this calls ``os.system`` (what a malicious checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    folder = make_folder(tmp_path, checkpoint={"network_weights": {}, "trainer_name": _RunsCode(marker)})
    with pytest.raises(ExternalModelError, match="refused") as err:
        load_checkpoint(folder / "fold_0" / "checkpoint_final.pth", folder)
    assert "system" in str(err.value)
    assert "fold_0/checkpoint_final.pth" in str(err.value)
    assert not marker.exists()


def test_checkpoint_with_numpy_scalars_and_a_device_loads(tmp_path):
    """What nnU-Net's trainer saves beside the weights: numpy scalars in its log, a device."""
    checkpoint = {
        "network_weights": {"w": torch.ones(2)},
        "logging": {"mean_fg_dice": [np.float64(0.5)], "ema_fg_dice": [np.float32(0.25)]},
        "_best_ema": np.float64(0.5),
        "current_epoch": 1,
        "init_args": {"configuration": "3d_fullres", "fold": 0, "device": torch.device("cpu")},
        "trainer_name": "nnUNetTrainer",
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }
    folder = make_folder(tmp_path, checkpoint=checkpoint)
    data = load_checkpoint(folder / "fold_0" / "checkpoint_final.pth", folder)
    assert data["_best_ema"] == 0.5 and data["logging"]["ema_fg_dice"][0] == np.float32(0.25)
    assert torch.equal(data["network_weights"]["w"], torch.ones(2))


def test_missing_files_are_named(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "fold_0" / "checkpoint_final.pth").unlink()
    with pytest.raises(ExternalModelError, match="no fold_"):
        read_nnunet_folder(folder)
    (folder / "plans.json").unlink()
    with pytest.raises(ExternalModelError, match="plans.json is missing"):
        read_nnunet_folder(folder)
