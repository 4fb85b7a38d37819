"""Reading an nnU-Net v2 trained-model folder's JSON as hostile input.

nnU-Net imports the names its ``plans.json`` gives (the network class, its conv, norm,
dropout and nonlinearity ops, the preprocessor, resampling functions, normalisation schemes,
label manager) with ``pydoc.locate`` or a search of its own package. Before any of nnU-Net's
code sees a plans file, every such name is checked here against an allow-list of what
nnU-Net itself writes; anything else is refused with the name quoted. Nothing is imported
by this module.

A trained-model folder is ``<results>/DatasetXXX_Name/<Trainer>__<Plans>__<configuration>/``
with ``dataset.json``, ``plans.json`` and ``fold_<k>/checkpoint_final.pth``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ExternalModelError

__all__ = ["NNUNET_NETWORKS", "NnUNetFolder", "folder_name_problem", "is_nnunet_folder", "read_nnunet_folder"]

_DNA = "dynamic_network_architectures.architectures"
#: Network classes a plans file may name (nnU-Net's U-Nets; its transformer architectures
#: need timm and are not built here).
NNUNET_NETWORKS = frozenset(
    {
        f"{_DNA}.unet.PlainConvUNet",
        f"{_DNA}.unet.ResidualEncoderUNet",
        f"{_DNA}.residual_unet.ResidualEncoderUNet",
    }
)
_NN = ("torch.nn", "torch.nn.modules.conv", "torch.nn.modules.instancenorm", "torch.nn.modules.batchnorm",
       "torch.nn.modules.dropout", "torch.nn.modules.activation")  # fmt: skip
_OPS = {
    "conv_op": ("Conv2d", "Conv3d"),
    "norm_op": ("InstanceNorm2d", "InstanceNorm3d", "BatchNorm2d", "BatchNorm3d"),
    "dropout_op": ("Dropout", "Dropout2d", "Dropout3d"),
    "nonlin": ("LeakyReLU", "ReLU", "ELU", "GELU", "PReLU"),
}
#: Arch kwargs a plans file may ask to import, and the dotted names each may take.
ALLOWED_OPS = {key: frozenset(f"{module}.{name}" for module in _NN for name in names) for key, names in _OPS.items()}
ALLOWED_PREPROCESSORS = frozenset({"DefaultPreprocessor"})
ALLOWED_RESAMPLING = frozenset({"resample_data_or_seg_to_shape", "resample_torch_fornnunet", "no_resampling_hack"})
ALLOWED_NORMALIZATION = frozenset(
    {"CTNormalization", "ZScoreNormalization", "NoNormalization", "RescaleTo01Normalization", "RGBTo01Normalization"}
)
ALLOWED_LABEL_MANAGERS = frozenset({"LabelManager"})
MAX_PATCH = 1024
_FOLDER_NAME = re.compile(r"^(?P<trainer>[A-Za-z0-9_]+?)__(?P<plans>[A-Za-z0-9_]+)__(?P<configuration>[A-Za-z0-9_]+)$")
_FOLD = re.compile(r"^fold_(\d+|all)$")


@dataclass(frozen=True)
class NnUNetFolder:
    """What an nnU-Net trained-model folder holds, checked.

    Attributes:
        path: the trainer folder.
        trainer, plans_name, configuration: from the folder name ``Trainer__Plans__config``.
        plans: the whole ``plans.json`` (checked names only), for nnU-Net's ``PlansManager``.
        dataset: ``dataset.json``.
        class_names: background first, in label-value order.
        label_values: the value of each class in nnU-Net's label maps.
        folds: fold names with a checkpoint, e.g. ``("0", "1")``.
        patch_size: the configuration's patch, (y, x) for 2d, (z, y, x) for 3d (after
            nnU-Net's ``transpose_forward``).
        modality: ``"CT"`` when the channel is normalised as CT, else ``"MR"``.
    """

    path: Path
    trainer: str
    plans_name: str
    configuration: str
    plans: dict
    dataset: dict
    class_names: tuple[str, ...]
    label_values: tuple[int, ...]
    folds: tuple[str, ...]
    patch_size: tuple[int, ...]
    modality: str

    def checkpoint(self, fold: str, name: str = "checkpoint_final.pth") -> Path:
        """The checkpoint file of ``fold``."""
        return self.path / f"fold_{fold}" / name


def is_nnunet_folder(path: str | Path) -> bool:
    """True for a folder with ``plans.json``, ``dataset.json`` and at least one ``fold_*``."""
    path = Path(path)
    return (
        path.is_dir()
        and (path / "plans.json").is_file()
        and (path / "dataset.json").is_file()
        and any(_FOLD.match(p.name) and p.is_dir() for p in path.iterdir())
    )


def folder_name_problem(name: str) -> str | None:
    """Why ``name`` is not nnU-Net's ``Trainer__Plans__configuration`` folder name, or None."""
    if _FOLDER_NAME.match(name):
        return None
    return f"folder name {name!r} is not nnU-Net's 'Trainer__Plans__configuration' (letters, digits, '_')"


def read_nnunet_folder(path: str | Path, checkpoint_name: str = "checkpoint_final.pth") -> NnUNetFolder:
    """Read and check an nnU-Net trained-model folder (its JSON only; nothing is imported).

    Raises:
        ExternalModelError: a missing file, a folder name that is not
            ``Trainer__Plans__configuration``, a configuration the plans lack, a name outside
            the allow-lists (quoted), multi-channel input, region-based labels, bad sizes.
    """
    path = Path(path)
    if not path.is_dir():
        raise ExternalModelError(path, "no such nnU-Net model folder")
    match = _FOLDER_NAME.match(path.name)
    if match is None:
        raise ExternalModelError(path, folder_name_problem(path.name))
    plans, dataset = _json(path, "plans.json"), _json(path, "dataset.json")
    configuration = match["configuration"]
    resolved = _configuration(path, plans, configuration)
    _check_plans(path, plans, resolved)
    names, values, modality = _check_dataset(path, dataset, resolved)
    folds = tuple(
        sorted((p.name[5:] for p in path.iterdir() if _FOLD.match(p.name) and (p / checkpoint_name).is_file()), key=_fold_key)
    )
    if not folds:
        raise ExternalModelError(path, f"no fold_*/{checkpoint_name} found")
    return NnUNetFolder(
        path=path, trainer=match["trainer"], plans_name=match["plans"], configuration=configuration, plans=plans,
        dataset=dataset, class_names=names, label_values=values, folds=folds,
        patch_size=tuple(int(p) for p in resolved["patch_size"]), modality=modality,
    )  # fmt: skip


def _fold_key(fold: str) -> tuple[int, int]:
    return (1, 0) if fold == "all" else (0, int(fold))


def _json(folder: Path, name: str) -> dict:
    file = folder / name
    if not file.is_file():
        raise ExternalModelError(folder, f"{name} is missing")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExternalModelError(folder, f"{name} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ExternalModelError(folder, f"{name} must hold a JSON object")
    return data


def _configuration(folder: Path, plans: dict, name: str) -> dict:
    """The configuration ``name`` with its ``inherits_from`` chain merged, as nnU-Net does."""
    configurations = plans.get("configurations")
    if not isinstance(configurations, dict) or name not in configurations:
        known = sorted(configurations) if isinstance(configurations, dict) else []
        raise ExternalModelError(folder, f"plans.json has no configuration {name!r}; it has {known}")
    chain, current = [], name
    while current is not None:
        if current in chain or current not in configurations or not isinstance(configurations[current], dict):
            raise ExternalModelError(folder, f"plans.json configuration {current!r} is missing or inherits in a loop")
        chain.append(current)
        current = configurations[current].get("inherits_from")
    merged: dict = {}
    for step in reversed(chain):
        merged.update(configurations[step])
    return merged


def _refuse(folder: Path, what: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise ExternalModelError(folder, f"plans.json {what} {value!r} is not allowed; allowed: {sorted(allowed)}")


def _check_plans(folder: Path, plans: dict, config: dict) -> None:
    architecture = config.get("architecture")
    if not isinstance(architecture, dict):
        raise ExternalModelError(folder, "plans.json configuration has no 'architecture' (plans older than nnU-Net 2.5)")
    _refuse(folder, "network class", architecture.get("network_class_name"), NNUNET_NETWORKS)
    kwargs = architecture.get("arch_kwargs")
    if not isinstance(kwargs, dict):
        raise ExternalModelError(folder, "plans.json architecture has no 'arch_kwargs' object")
    imports = architecture.get("_kw_requires_import", [])
    if not isinstance(imports, list):
        raise ExternalModelError(folder, f"plans.json '_kw_requires_import' {imports!r} must be a list")
    for key in imports:
        _refuse(folder, "'_kw_requires_import' entry", key, ALLOWED_OPS)
        if kwargs.get(key) is not None:
            _refuse(folder, f"{key}", kwargs.get(key), ALLOWED_OPS[key])
    for key, value in kwargs.items():
        if isinstance(value, str) and key not in imports:
            raise ExternalModelError(folder, f"plans.json arch_kwargs {key!r} {value!r}: a name outside '_kw_requires_import'")
    _refuse(folder, "preprocessor_name", config.get("preprocessor_name", "DefaultPreprocessor"), ALLOWED_PREPROCESSORS)
    for key in ("resampling_fn_data", "resampling_fn_probabilities", "resampling_fn_seg"):
        _refuse(folder, key, config.get(key), ALLOWED_RESAMPLING)
        if not isinstance(config.get(f"{key}_kwargs", {}), dict):
            raise ExternalModelError(folder, f"plans.json {key}_kwargs must be an object")
    schemes = config.get("normalization_schemes")
    if not isinstance(schemes, list) or not schemes:
        raise ExternalModelError(folder, f"plans.json normalization_schemes {schemes!r} must be a non-empty list")
    for scheme in schemes:
        _refuse(folder, "normalization scheme", scheme, ALLOWED_NORMALIZATION)
    _refuse(folder, "label_manager", plans.get("label_manager", "LabelManager"), ALLOWED_LABEL_MANAGERS)
    _check_sizes(folder, plans, config)


def _check_sizes(folder: Path, plans: dict, config: dict) -> None:
    patch, spacing = config.get("patch_size"), config.get("spacing")
    ok_patch = isinstance(patch, list) and len(patch) in (2, 3) and all(
        isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= MAX_PATCH for p in patch
    )
    if not ok_patch:
        raise ExternalModelError(folder, f"plans.json patch_size {patch!r} must be 2 or 3 integers from 1 to {MAX_PATCH}")
    ok_spacing = isinstance(spacing, list) and len(spacing) == len(patch) and all(
        isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) and s > 0 for s in spacing
    )
    if not ok_spacing:
        raise ExternalModelError(folder, f"plans.json spacing {spacing!r} must be {len(patch)} positive numbers (mm)")
    forward, backward = plans.get("transpose_forward"), plans.get("transpose_backward")
    for name, order in (("transpose_forward", forward), ("transpose_backward", backward)):
        if not isinstance(order, list) or sorted(order) != [0, 1, 2]:
            raise ExternalModelError(folder, f"plans.json {name} {order!r} must be a permutation of [0, 1, 2]")
    if [forward.index(i) for i in range(3)] != backward:
        raise ExternalModelError(folder, f"plans.json transpose_backward {backward} does not undo transpose_forward {forward}")


def _check_dataset(folder: Path, dataset: dict, config: dict) -> tuple[tuple[str, ...], tuple[int, ...], str]:
    channels = dataset.get("channel_names", dataset.get("modality"))
    if not isinstance(channels, dict) or len(channels) != 1:
        raise ExternalModelError(
            folder, f"dataset.json channel_names {channels!r}: only models with one input channel are supported"
        )
    labels = dataset.get("labels")
    if not isinstance(labels, dict) or len(labels) < 2:
        raise ExternalModelError(folder, f"dataset.json labels {labels!r} must name background and a class")
    if dataset.get("regions_class_order") is not None or any(not isinstance(v, int) or isinstance(v, bool) for v in labels.values()):
        raise ExternalModelError(folder, "dataset.json labels are regions (region-based training): not supported")
    if "ignore" in labels:
        labels = {k: v for k, v in labels.items() if k != "ignore"}
    pairs = sorted(((int(v), str(k)) for k, v in labels.items()))
    values = tuple(v for v, _ in pairs)
    if values[0] != 0 or len(set(values)) != len(values) or values[-1] > 65535:
        raise ExternalModelError(folder, f"dataset.json label values {list(values)} must be distinct, 0 for background")
    schemes = config["normalization_schemes"]
    modality = "CT" if schemes[0] == "CTNormalization" else "MR"
    return tuple(name for _, name in pairs), values, modality
