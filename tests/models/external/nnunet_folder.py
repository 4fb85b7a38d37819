"""A tiny but real nnU-Net v2 model folder, made with nnU-Net's own code.

Run as ``python -m tests.models.external.nnunet_folder ROOT``: it writes a synthetic CT
dataset in nnU-Net's raw format under ``ROOT/raw`` (``--shape Z Y X`` and ``--spacing Z Y X``
set its cases, ``--configurations`` which folders to write; ``bench/external_models.py``
builds a 1 mm 3d_fullres folder this way), runs nnU-Net's fingerprint extractor,
experiment planner and preprocessing on it (``ROOT/preprocessed``), and for the ``2d`` and ``3d_fullres``
configurations writes a trained-model folder under ``ROOT/results`` with ``dataset.json``,
``plans.json`` and, for folds 0 and 1, ``checkpoint_final.pth`` saved by nnU-Net's own trainer
(``nnUNetTrainer.save_checkpoint``) from its freshly initialised network, with the numpy
scalars a trained run logs. No training runs: the weights are nnU-Net's initialisation, one
seed per fold.

nnU-Net reads its folders from environment variables when it is imported, so this runs in
its own process.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

DATASET_ID = 901
DATASET_NAME = f"Dataset{DATASET_ID}_Tiny"
CONFIGURATIONS = ("2d", "3d_fullres")
FOLDS = (0, 1)
TRAINER = "nnUNetTrainer"
PLANS = "nnUNetPlans"
CASE_SHAPE = (14, 30, 26)  # z, y, x voxels
CASE_SPACING = (2.5, 1.0, 1.2)  # z, y, x mm


def synthetic_case(seed: int, shape=CASE_SHAPE, spacing=CASE_SPACING) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like (z, y, x) int16 image in HU with two blobs (labels 1, 2) in soft tissue."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    image = np.full(shape, -1000.0, np.float32)
    body = ((y - shape[1] / 2) / (shape[1] * 0.45)) ** 2 + ((x - shape[2] / 2) / (shape[2] * 0.45)) ** 2 < 1
    image[body] = 40.0
    labels = np.zeros(shape, np.uint8)
    for label, hu in ((1, 300.0), (2, -80.0)):
        centre = [rng.uniform(0.3 * n, 0.7 * n) for n in shape]
        radius = rng.uniform(0.15, 0.22) * min(shape[1:])
        blob = ((z - centre[0]) * spacing[0]) ** 2 + ((y - centre[1]) * spacing[1]) ** 2 + (
            (x - centre[2]) * spacing[2]
        ) ** 2 < radius**2
        blob &= body
        image[blob] = hu
        labels[blob] = label
    image += rng.normal(0, 15, shape).astype(np.float32)
    return np.round(image).astype(np.int16), labels


def write_raw(raw: Path, cases: int = 4, shape=CASE_SHAPE, spacing=CASE_SPACING) -> Path:
    """The dataset in nnU-Net's raw format (imagesTr, labelsTr, dataset.json): ``cases``
    synthetic cases of ``shape`` (z, y, x) voxels of ``spacing`` (z, y, x) mm."""
    import SimpleITK as sitk

    folder = raw / DATASET_NAME
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    for i in range(cases):
        image, labels = synthetic_case(i, shape, spacing)
        for array, path in ((image, folder / "imagesTr" / f"tiny_{i:03d}_0000.nii.gz"), (labels, folder / "labelsTr" / f"tiny_{i:03d}.nii.gz")):
            itk = sitk.GetImageFromArray(array)
            itk.SetSpacing(tuple(float(v) for v in spacing[::-1]))
            sitk.WriteImage(itk, str(path))
    dataset = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "bone": 1, "fat": 2},
        "numTraining": cases,
        "file_ending": ".nii.gz",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return folder


def write_model_folder(root: Path, configuration: str, mirroring: bool = False) -> Path:
    """The trainer folder of ``configuration`` with folds 0 and 1 (see the module docstring);
    with ``mirroring`` its checkpoints allow the mirror axes nnU-Net's trainer sets when
    training starts, otherwise none (the trainer saves ``None`` before it starts)."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    plans = load_json(str(root / "preprocessed" / DATASET_NAME / f"{PLANS}.json"))
    dataset = load_json(str(root / "raw" / DATASET_NAME / "dataset.json"))
    out = root / "results" / DATASET_NAME / f"{TRAINER}__{PLANS}__{configuration}"
    for fold in FOLDS:
        torch.manual_seed(1000 * fold + len(configuration))
        # nnU-Net's training entry point adds "continue_training" to the plans; the trainer pops it.
        trainer = nnUNetTrainer({**plans, "continue_training": False}, configuration, fold, dataset,
                                device=torch.device("cpu"))  # fmt: skip
        trainer.initialize()
        if mirroring:
            trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        # What a trained run's log holds: numpy scalars per epoch, the EMA of the Dice.
        trainer.logger.log("mean_fg_dice", np.float64(0.5 + 0.1 * fold), 0)
        trainer.logger.log("ema_fg_dice", np.float64(0.5 + 0.1 * fold), 0)
        trainer._best_ema = np.float64(0.5 + 0.1 * fold)
        trainer.save_checkpoint(str(out / f"fold_{fold}" / "checkpoint_final.pth"))
    (out / "plans.json").write_text(json.dumps(plans, indent=2))
    (out / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return out


def main(root: Path, configurations=CONFIGURATIONS, mirroring: bool = False) -> None:
    """Write plans and the model folder of each of ``configurations`` under ``root`` (the raw
    data is there already)."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments, preprocess

    extract_fingerprints([DATASET_ID], num_processes=1, verbose=False, show_progress_bar=False)
    plan_experiments([DATASET_ID])
    # the trainer's initialisation looks at the preprocessed cases (their file format)
    preprocess([DATASET_ID], configurations=configurations, num_processes=(1,) * len(configurations), show_progress_bar=False)
    for configuration in configurations:
        write_model_folder(root, configuration, mirroring)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("--shape", nargs=3, type=int, default=CASE_SHAPE, metavar=("Z", "Y", "X"))
    parser.add_argument("--spacing", nargs=3, type=float, default=CASE_SPACING, metavar=("Z", "Y", "X"))
    parser.add_argument("--configurations", nargs="+", default=CONFIGURATIONS, choices=CONFIGURATIONS)
    parser.add_argument("--mirroring", action="store_true", help="checkpoints allow the trainer's mirror axes")
    args = parser.parse_args()
    target = args.root.resolve()
    write_raw(target / "raw", shape=tuple(args.shape), spacing=tuple(args.spacing))
    os.environ.update(
        nnUNet_raw=str(target / "raw"),
        nnUNet_preprocessed=str(target / "preprocessed"),
        nnUNet_results=str(target / "results"),
    )
    main(target, tuple(args.configurations), args.mirroring)
