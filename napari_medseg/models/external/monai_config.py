"""What a MONAI bundle's inference config says, read against allow-lists (nothing imported).

Read: ``network_def`` (a network class of ``monai.networks.nets`` from :data:`NETWORKS`, its
arguments literal), ``preprocessing`` (a ``Compose`` of :data:`TRANSFORMS`, with
:data:`IGNORED_TRANSFORMS` read past), ``inferer`` (:data:`INFERERS`) and, of
``postprocessing``, only ``Activationsd`` (softmax or sigmoid) and where it stands against
``Invertd``. Everything else in the file (``imports``, ``device``, ``network``, datasets,
handlers, evaluators, savers) is never looked at, so the zoo's ``$`` expressions there do
no harm; in the parts read, any expression, macro or unknown name is refused by key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ExternalModelError
from .monai_refs import ConfigView

__all__ = ["IGNORED_TRANSFORMS", "INFERERS", "NETWORKS", "TRANSFORMS", "InferenceConfig", "read_inference_config"]

#: Network classes (``monai.networks.nets.<Class>``), each with the module that defines it.
NETWORKS = {
    "UNet": "unet", "BasicUNet": "basic_unet", "SegResNet": "segresnet", "DynUNet": "dynunet",
    "AttentionUnet": "attentionunet", "UNETR": "unetr", "SwinUNETR": "swin_unetr", "VNet": "vnet",
}  # fmt: skip
_NETWORK_ALIASES = {"Unet": "UNet", "BasicUnet": "BasicUNet", "Basicunet": "BasicUNet", "basicunet": "BasicUNet",
                    "DynUnet": "DynUNet", "Dynunet": "DynUNet"}  # fmt: skip
_DTYPE = "dtype"
#: Pre-transforms applied with MONAI's own classes, and the arguments (besides ``keys``) read.
TRANSFORMS = {
    "Orientationd": {"axcodes", "as_closest_canonical"},
    "Spacingd": {"pixdim", "mode", "padding_mode", "align_corners", "diagonal", "scale_extent", "recompute_affine",
                 "min_pixdim", "max_pixdim", _DTYPE},
    "ScaleIntensityRanged": {"a_min", "a_max", "b_min", "b_max", "clip", _DTYPE},
    "ScaleIntensityRangePercentilesd": {"lower", "upper", "b_min", "b_max", "clip", "relative", "channel_wise", _DTYPE},
    "NormalizeIntensityd": {"subtrahend", "divisor", "nonzero", "channel_wise", _DTYPE},
    "ScaleIntensityd": {"minv", "maxv", "factor", "channel_wise", _DTYPE},
    "SpatialPadd": {"spatial_size", "method", "mode"},
    "DivisiblePadd": {"k", "method", "mode"},
}  # fmt: skip
#: Pre-transforms read past: loading, channel and type handling. The scan arrives as what
#: ``LoadImaged`` + ``EnsureChannelFirstd`` make of its file (a float32 channel-first
#: ``MetaTensor`` in RAS); the network runs in float32 whatever a cast asks.
IGNORED_TRANSFORMS = frozenset(
    {"LoadImaged", "EnsureChannelFirstd", "AddChanneld", "EnsureTyped", "ToTensord", "CastToTyped", "ToDeviced",
     "Identityd", "ToNumpyd"}  # fmt: skip
)
#: Inferers, and the arguments read (how windows are laid out and blended).
INFERERS = {
    "SlidingWindowInferer": {"roi_size", "sw_batch_size", "overlap", "mode", "sigma_scale", "padding_mode", "cval"},
    "SimpleInferer": set(),
}
#: Inferer arguments about where and how fast it runs: this project decides those.
_INFERER_RUNTIME = {"device", "sw_device", "progress", "cache_roi_weight_map", "cpu_thresh", "buffer_steps", "buffer_dim"}
_DTYPES = {"float32": "float32", "float64": "float64"}
_DTYPES.update({f"${m}.{t}": t for m in ("np", "numpy", "torch") for t in ("float32", "float64")})


@dataclass(frozen=True)
class InferenceConfig:
    """The checked parts of an inference config.

    Attributes:
        file: its name in the bundle (``configs/inference.json``).
        network: the class name in :data:`NETWORKS`; ``network_kwargs`` its literal arguments.
        image_key: the key the pre-transforms act on (``"image"``).
        transforms: (class name in :data:`TRANSFORMS`, literal arguments without ``keys``).
        inferer: a name in :data:`INFERERS`; ``inferer_kwargs`` its literal arguments.
        activation: ``"softmax"``, the only one read (sigmoid, multi-label, is refused).
        activation_first: the activation comes before ``Invertd`` (as in the zoo), else after.
        ignored: names of the components read past (pre- and postprocessing).
    """

    file: str
    network: str
    network_kwargs: Mapping[str, Any]
    image_key: str
    transforms: tuple[tuple[str, Mapping[str, Any]], ...]
    inferer: str
    inferer_kwargs: Mapping[str, Any]
    activation: str
    activation_first: bool
    ignored: tuple[str, ...]


def read_inference_config(config: Mapping[str, Any], file: str, label: Path) -> InferenceConfig:
    """Check an inference config (the parsed ``file``) and keep what inference needs.

    Raises:
        ExternalModelError: a missing section, or a used value that is an expression, a
            macro, a component outside the allow-lists or an unknown argument (named).
    """
    view = ConfigView(config, file, label)
    for section in ("preprocessing", "inferer"):
        if section not in config:
            raise ExternalModelError(label, f"{file} has no {section!r}")
    network, network_kwargs = _network(view)
    image_key, transforms, ignored = _preprocessing(view)
    inferer, inferer_kwargs = _inferer(view)
    activation, activation_first, ignored_after = _postprocessing(view)
    return InferenceConfig(file, network, network_kwargs, image_key, tuple(transforms), inferer, inferer_kwargs,
                           activation, activation_first, tuple(ignored + ignored_after))  # fmt: skip


def _network(view: ConfigView) -> tuple[str, dict]:
    key = "network_def" if "network_def" in view.config else "network"
    if key not in view.config:
        raise ExternalModelError(view.label, f"{view.file} has no 'network_def'")
    target, key, arguments = _enabled(view, view.config[key], key)
    name = _network_name(view, target, key)
    return name, {k: view.literal(v, f"{key}#{k}") for k, v in arguments.items()}


def _network_name(view: ConfigView, target: str, key: str) -> str:
    name = target
    if target.startswith("monai.networks.nets."):
        parts = target[len("monai.networks.nets."):].split(".")
        name = parts[-1]
        canonical = _NETWORK_ALIASES.get(name, name)
        if len(parts) > 2 or (len(parts) == 2 and NETWORKS.get(canonical) != parts[0]):
            raise view.fail(f"{key}#_target_", target, "is not where MONAI defines that network")
    canonical = _NETWORK_ALIASES.get(name, name)
    if canonical not in NETWORKS:
        raise view.fail(f"{key}#_target_", target, f"is not an allowed network (allowed: {', '.join(NETWORKS)})")
    return canonical


def _transform_name(target: str) -> str:
    """``Spacingd`` for ``Spacingd``, ``SpacingD``, ``SpacingDict`` or a ``monai.transforms`` path."""
    name = target.rsplit(".", 1)[-1] if target.startswith("monai.transforms.") else target
    if name.endswith("Dict"):
        return name[: -len("Dict")] + "d"
    return name[:-1] + "d" if name.endswith("D") else name


def _items(view: ConfigView, key: str, compose_key: str) -> list[tuple[str, str, dict]]:
    """The enabled components of a ``Compose`` at ``key``: (name, key, raw arguments)."""
    target, key, arguments = _enabled(view, view.config[key], key)
    if _transform_name(target) != "Compose":
        raise view.fail(f"{key}#_target_", target, "must be Compose")
    transforms, list_key = view.follow(arguments.get(compose_key), f"{key}#{compose_key}")
    if not isinstance(transforms, list):
        raise view.fail(list_key, transforms, "must be a list of transforms")
    found = []
    for i, item in enumerate(transforms):
        component = view.component(item, f"{list_key}#{i}")
        if component is not None:
            found.append((_transform_name(component[0]), component[1], component[2]))
    return found


def _preprocessing(view: ConfigView) -> tuple[str, list, list]:
    image_key, transforms, ignored = None, [], []
    for name, key, arguments in _items(view, "preprocessing", "transforms"):
        if name in IGNORED_TRANSFORMS:
            ignored.append(name)
            continue
        if name not in TRANSFORMS:
            raise view.fail(f"{key}#_target_", name, f"is not a supported pre-transform (supported: {', '.join(TRANSFORMS)};"
                            f" read past: {', '.join(sorted(IGNORED_TRANSFORMS))})")  # fmt: skip
        keys = view.literal(arguments.get("keys"), f"{key}#keys")
        keys = [keys] if isinstance(keys, str) else keys
        if not isinstance(keys, list) or len(keys) != 1 or not isinstance(keys[0], str):
            raise view.fail(f"{key}#keys", keys, "must name the one image key")
        if image_key not in (None, keys[0]):
            raise view.fail(f"{key}#keys", keys, f"differs from the image key {image_key!r} of the transforms before")
        image_key = keys[0]
        transforms.append((name, _arguments(view, arguments, TRANSFORMS[name], key, skip={"keys"})))
    return image_key or "image", transforms, ignored


def _arguments(view: ConfigView, arguments: dict, allowed: set, key: str, skip=frozenset()) -> dict:
    checked = {}
    for name, value in arguments.items():
        if name in skip:
            continue
        if name not in allowed:
            raise view.fail(f"{key}#{name}", value, f"is not an argument read here (read: {', '.join(sorted(allowed))})")
        checked[name] = _dtype(view, value, f"{key}#{name}") if name == _DTYPE else view.literal(value, f"{key}#{name}")
    return checked


def _dtype(view: ConfigView, value: Any, key: str) -> str | None:
    value, key = view.follow(value, key)
    if value is None or (isinstance(value, str) and value in _DTYPES):
        return None if value is None else _DTYPES[value]
    raise view.fail(key, value, f"is not a dtype read here (read: {', '.join(_DTYPES)})")


def _inferer(view: ConfigView) -> tuple[str, dict]:
    target, key, arguments = _enabled(view, view.config["inferer"], "inferer")
    name = target.rsplit(".", 1)[-1] if target.startswith("monai.inferers.") else target
    if name not in INFERERS:
        raise view.fail(f"{key}#_target_", target, f"is not a supported inferer (supported: {', '.join(INFERERS)})")
    checked = _arguments(view, arguments, INFERERS[name], key, skip=_INFERER_RUNTIME)
    roi = checked.get("roi_size")
    if name == "SlidingWindowInferer":
        if not isinstance(roi, list) or len(roi) != 3 or not all(isinstance(r, int) and r > 0 for r in roi):
            raise view.fail(f"{key}#roi_size", roi, "must be three positive integers")
    return name, checked


def _postprocessing(view: ConfigView) -> tuple[str, bool, list]:
    if "postprocessing" not in view.config:
        return "softmax", True, []
    activation, first, inverted, ignored = "softmax", True, False, []
    for name, key, arguments in _items(view, "postprocessing", "transforms"):
        if name == "Invertd":
            inverted = True
        elif name == "Activationsd":
            flags = {f: view.literal(arguments.get(f, False), f"{key}#{f}") for f in ("softmax", "sigmoid")}
            if arguments.get("other") is not None:
                raise view.fail(f"{key}#other", arguments["other"], "is a custom activation; only softmax is read")
            if flags["sigmoid"] is True:
                raise view.fail(f"{key}#sigmoid", True, "makes a multi-label output; only one label per voxel "
                                "(softmax) is supported")  # fmt: skip
            activation, first = "softmax", not inverted
        else:
            ignored.append(name)
    return activation, first, ignored


def _enabled(view: ConfigView, value: Any, key: str) -> tuple[str, str, dict]:
    component = view.component(value, key)
    if component is None:
        raise view.fail(key, value, "is disabled (_disabled_)")
    return component
