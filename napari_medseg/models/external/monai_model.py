"""A MONAI bundle as a model of this project.

:func:`open_monai` reads the bundle's configs as data (:mod:`.monai_files`,
:mod:`.monai_config`), builds the allow-listed network class of ``monai.networks.nets`` with
the checked literal arguments, and loads ``models/model.pt`` weights-only and strictly
(:mod:`.checkpoint`). :class:`MonaiBundleModel` is a torch module whose ``forward`` is the
network's; it segments a :class:`~napari_medseg.types.Volume` the way the bundle's own
pipeline does (:mod:`.monai_pipeline`), so the result lies on the volume's own grid; its
Grad-CAM runs the same way (:meth:`MonaiBundleModel.grad_cam_volume`, :mod:`.monai_cam`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ...config import ModelConfig
from ...control import ProgressCallback, StopCheck
from ...types import Geometry
from .checkpoint import load_checkpoint
from .errors import ExternalModelError, require
from .monai_config import InferenceConfig, read_inference_config
from .monai_files import INFERENCE_CONFIGS, METADATA, TORCHSCRIPT, WEIGHTS, bundle_folder, read_config_file
from .monai_meta import class_names_of, modality_of
from ..seeded_random import SeededRandom
from .sampling import Flipped, active_dropout, check_method, flip_sets, require_dropout

#: Tensor axes of a (B, C, *roi) window that ``tta`` flips: the roi's three spatial axes.
TTA_AXES = (2, 3, 4)

__all__ = ["MonaiBundleModel", "open_monai"]

logger = logging.getLogger(__name__)

#: Where Grad-CAM hooks each network by default (its finest decoder stage), by name; UNet's
#: is the half-resolution up-sampling before the skip is joined and the head runs.
_GRADCAM_LAYERS = {"UNet": "model.1.submodule", "BasicUNet": "upcat_1", "UNETR": "decoder2", "SwinUNETR": "decoder1",
                   "VNet": "up_tr32", "AttentionUnet": "model.1.submodule", "SegResNet": "up_layers",
                   "DynUNet": "upsamples"}  # fmt: skip
_NESTED_STATES = ("model", "state_dict", "network")


class MonaiBundleModel(nn.Module):
    """A MONAI bundle: its network with the bundle's weights, and its checked inference config.

    Attributes:
        network: the MONAI network, mapping (B, 1, *roi) to logits (B, K, *roi).
        inference: the checked inference config (:class:`~.monai_config.InferenceConfig`).
        config: a :class:`~napari_medseg.config.ModelConfig` describing it to the rest of the
            project (architecture ``"monai"``, class names, ``patch_size`` = the inferer's
            roi in (z, y, x) order, modality).
        bundle_path: the folder or .zip given; ``bundle_meta``: name, version, network, config file.
    """

    #: The inference engine hands whole volumes to :meth:`predict_volume` (the bundle's own
    #: transforms and windows) instead of its own model-grid path.
    segments_volumes = True

    def __init__(self, path: Path, network: nn.Module, inference: InferenceConfig, metadata: Mapping) -> None:
        super().__init__()
        self.network = network
        self.inference = inference
        outputs = int(inference.network_kwargs.get("out_channels", 0))
        spacing = dict(inference.transforms).get("Spacingd", {}).get("pixdim")
        self.config = ModelConfig(
            architecture="monai", spatial_dims=3, in_channels=1, class_names=class_names_of(metadata, outputs),
            modality=modality_of(metadata, inference.image_key), normalization={"method": "monai"},
            patch_size=tuple(reversed(inference.inferer_kwargs.get("roi_size", ()))),
            target_spacing=_target_spacing(spacing),
            gradcam_layer=default_gradcam_layer(network, inference.network),
            extra={"external": "monai", "network": inference.network, "inferer": inference.inferer,
                   "transforms": [name for name, _ in inference.transforms], "ignored": list(inference.ignored)},
        )  # fmt: skip
        self.bundle_path = path
        self.bundle_meta = {"name": str(metadata.get("name") or path.stem), "version": str(metadata.get("version", "")),
                            "network": inference.network, "config_file": inference.file}  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, K, *S) of (B, 1, *S) preprocessed input."""
        return self.network(x)

    def training_copy(self) -> MonaiBundleModel:
        """A copy to fine-tune (the network and its config)."""
        return copy.deepcopy(self)

    def keep_trained_weights(self) -> None:
        """Nothing to do: the network holds the bundle's only weights."""

    def training_arrays(self, volume, sparse: np.ndarray, reference: np.ndarray | None = None):
        """The scan, strokes and reference on the network's grid (:mod:`.training`)."""
        from .training import monai_training_arrays

        return monai_training_arrays(self, volume, sparse, reference)

    def predict_volume(
        self,
        image: np.ndarray,
        spacing: Sequence[float],
        *,
        geometry: Geometry | None = None,
        device: torch.device | str = "cpu",
        progress: ProgressCallback = None,
        should_stop: StopCheck = None,
    ) -> np.ndarray:
        """Class probabilities of a scan, as the bundle's own MONAI pipeline computes them.

        Args:
            image: (z, y, x) voxels in SimpleITK's array order, any real dtype.
            spacing: (z, y, x) voxel size in mm; used only when ``geometry`` is None.
            geometry: the scan's grid (origin and direction matter to ``Orientationd``);
                None: ``spacing`` at the origin with the identity direction.

        Returns:
            (K, z, y, x) float32 probabilities on ``image``'s own grid.
        """
        from .monai_pipeline import probabilities_each

        geometry = geometry if geometry is not None else Geometry(tuple(spacing), (0.0, 0.0, 0.0))
        device = torch.device(device)
        was_training = self.network.training
        self.network.eval().to(device)
        try:
            return next(probabilities_each([self.network], image, geometry, self.inference, device=device,
                                           progress=progress, should_stop=should_stop))  # fmt: skip
        finally:
            self.network.train(was_training)

    def grad_cam_volume(self, image: np.ndarray, spacing: Sequence[float], *, explainer, target_class: int,
                        region: np.ndarray | None = None, geometry: Geometry | None = None,
                        device: torch.device | str = "cpu", progress: ProgressCallback = None,
                        should_stop: StopCheck = None) -> np.ndarray:  # fmt: skip
        """Grad-CAM (or Grad-CAM++) of one class, computed on the bundle's preprocessed grid
        by its own inferer and brought back by ``Invertd`` (:mod:`.monai_cam`).

        Args:
            explainer: explains windows of the network (:data:`.cam.WindowExplainer`).
            target_class: index of the class explained.
            region: bool (z, y, x) on ``image``'s grid; default: the voxels the bundle
                predicts as ``target_class``.
            Others: as :meth:`predict_volume`; ``progress`` counts window batches (of the
            prediction of the default region first, then of the map).

        Returns:
            (z, y, x) float32 map >= 0 on ``image``'s own grid.

        Raises:
            Cancelled: ``should_stop()`` returned True before a window batch.
            ValueError: a bad class, region, layer or method (each named).
        """
        from .monai_cam import monai_grad_cam

        geometry = geometry if geometry is not None else Geometry(tuple(spacing), (0.0, 0.0, 0.0))
        device = torch.device(device)
        was_training = self.network.training
        self.network.eval().to(device)
        try:
            return monai_grad_cam(self.network, image, geometry, self.inference, self.config.class_names,
                                  explainer=explainer, target_class=target_class, region=region, device=device,
                                  progress=progress, should_stop=should_stop)  # fmt: skip
        finally:
            self.network.train(was_training)

    def sample_count(self, method: str, samples: int = 10) -> int:
        """How many uncertainty samples ``method`` draws (see :meth:`sample_probabilities`).

        Raises:
            ExternalModelError: ``ensemble`` (a bundle is one network), ``mc-dropout``
                without dropout of p > 0 (each named).
            ValueError: an unknown method or a bad ``samples``.
        """
        check_method(method, samples)
        name = f"MONAI bundle {self.bundle_meta['name']} ({self.inference.network})"
        if method == "ensemble":
            raise ExternalModelError(self.bundle_path, f"ensemble needs several networks and {name} is one network; "
                                     "use --uncertainty tta (flips) or mc-dropout")  # fmt: skip
        if method == "tta":
            return len(flip_sets(TTA_AXES))
        require_dropout(self.network, self.bundle_path, name)
        return samples

    def sample_probabilities(self, image: np.ndarray, spacing: Sequence[float], *, method: str, samples: int = 10,
                             seed: int = 0, geometry: Geometry | None = None, device: torch.device | str = "cpu",
                             progress: ProgressCallback = None, should_stop: StopCheck = None) -> Iterator[np.ndarray]:  # fmt: skip
        """Uncertainty samples of a scan, one (K, z, y, x) float32 array on ``image``'s grid
        at a time (the bundle's pre-transforms run once, ``Invertd`` once per sample):

        - ``tta``: one sample per flip of the network input's three spatial axes, every
          subset of them (8 samples, the unflipped one first), each window flipped before
          the network and its logits flipped back; the axes are those of the roi after the
          bundle's own transforms (MONAI's (x, y, z) order, after ``Orientationd`` when it has one);
        - ``mc-dropout``: ``samples`` passes with the network's dropout on, masks drawn
          from a private state seeded by ``seed``.

        Arguments as :meth:`predict_volume`; ``progress`` counts window batches over all samples.

        Raises:
            Cancelled: ``should_stop()`` returned True before a window batch.
        """
        from .monai_pipeline import probabilities_each

        count = self.sample_count(method, samples)
        geometry = geometry if geometry is not None else Geometry(tuple(spacing), (0.0, 0.0, 0.0))
        device = torch.device(device)
        networks = [Flipped(self.network, axes) for axes in flip_sets(TTA_AXES)] if method == "tta" else [self.network] * count
        random = SeededRandom(seed)
        was_training = self.network.training
        self.network.eval().to(device)
        try:
            with active_dropout(self.network) if method == "mc-dropout" else nullcontext():
                pending = probabilities_each(networks, image, geometry, self.inference, device=device,
                                              progress=progress, should_stop=should_stop)  # fmt: skip
                while True:
                    with random.active(device):
                        sample = next(pending, None)
                    if sample is None:
                        return
                    yield sample
        finally:
            self.network.train(was_training)


def _target_spacing(pixdim) -> tuple[float, float, float]:
    """(z, y, x) mm of ``Spacingd``'s (x, y, z) ``pixdim`` (one number: isotropic); else 1 mm."""
    if isinstance(pixdim, (int, float)) and not isinstance(pixdim, bool) and pixdim > 0:
        return (float(pixdim),) * 3
    if isinstance(pixdim, list) and len(pixdim) == 3 and all(isinstance(p, (int, float)) and p > 0 for p in pixdim):
        return tuple(float(p) for p in reversed(pixdim))
    return (1.0, 1.0, 1.0)


def default_gradcam_layer(network: nn.Module, name: str) -> str:
    """The finest decoder stage of ``network`` by module name ("" when the class has none)."""
    layer = _GRADCAM_LAYERS.get(name, "")
    names = [n for n, _ in network.named_modules()]
    if layer in ("up_layers", "upsamples"):  # module lists: their last entry is the finest
        stages = [n for n in names if n.startswith(layer + ".") and n.count(".") == 1]
        return stages[-1] if stages else ""
    return layer if layer in names else ""


def open_monai(path: str | Path) -> MonaiBundleModel:
    """Open a MONAI bundle folder or .zip (see :mod:`.monai_files` for the layout).

    Raises:
        ExternalModelError: MONAI not installed (the extra is named), missing files, a config
            outside the allow-lists (:mod:`.monai_config`), TorchScript only, refused or
            mismatching weights.
    """
    path = Path(path)
    require("monai", path)
    with bundle_folder(path) as folder:
        _, metadata = read_config_file(folder, (METADATA,), path)
        file, config = read_config_file(folder, INFERENCE_CONFIGS, path)
        inference = read_inference_config(config, file, path)
        if not (folder / WEIGHTS).is_file() and (folder / TORCHSCRIPT).is_file():
            raise ExternalModelError(path, f"has only {TORCHSCRIPT}, a TorchScript program, not weights; "
                                     f"{WEIGHTS} (a state dict) is needed")  # fmt: skip
        checkpoint = load_checkpoint(folder / WEIGHTS, path)
    network = _build_network(inference, path)
    network.load_state_dict(_fitting_state(checkpoint, network.state_dict(), path))
    model = MonaiBundleModel(path, network, inference, metadata)
    logger.info("opened MONAI bundle %s (%s)", path, inference.network)
    return model.eval()


def _build_network(inference: InferenceConfig, path: Path) -> nn.Module:
    import monai.networks.nets as nets

    kwargs = dict(inference.network_kwargs)
    supported = {"spatial_dims": 3, "in_channels": 1}
    problems = {k: kwargs[k] for k, value in supported.items() if kwargs.get(k, value) != value}
    if problems:
        raise ExternalModelError(path, f"{inference.file}: network_def {problems} is not supported (3D, one input channel)")
    if not isinstance(kwargs.get("out_channels"), int) or kwargs["out_channels"] < 2:
        raise ExternalModelError(path, f"{inference.file}: network_def out_channels {kwargs.get('out_channels')!r} "
                                 "must be an integer >= 2 (background and at least one class)")  # fmt: skip
    try:
        return getattr(nets, inference.network)(**kwargs)
    except Exception as err:  # the networks raise TypeError, ValueError, AssertionError, ...
        raise ExternalModelError(path, f"{inference.file}: network_def does not build {inference.network}: {err}") from None


def _fitting_state(checkpoint: Mapping, expected: Mapping, path: Path) -> dict:
    """The checkpoint's state dict (plain, or under model/state_dict/network), checked to
    fit ``expected`` exactly; a ``module.`` prefix (DataParallel) is dropped."""
    state = checkpoint
    if not _is_state(state):
        state = next((checkpoint[k] for k in _NESTED_STATES if _is_state(checkpoint.get(k))), None)
    if state is None:
        raise ExternalModelError(path, f"{WEIGHTS} holds no state dict of tensors (plain or under {list(_NESTED_STATES)}); "
                                 f"its keys: {sorted(map(str, checkpoint))[:5]}")  # fmt: skip
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    shapes = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise ExternalModelError(path, f"{WEIGHTS} does not fit network_def: missing {missing[:5]}, unexpected "
                                 f"{unexpected[:5]}, shape mismatches {shapes[:5]}")  # fmt: skip
    return {k: v.to(expected[k].dtype) if v.is_floating_point() else v for k, v in state.items()}


def _is_state(value) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()
    )
