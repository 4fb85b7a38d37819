"""An nnU-Net v2 trained-model folder as a model of this project.

:func:`open_nnunet` checks the folder's JSON (:mod:`.nnunet_plans`), builds the network with
nnU-Net's own ``get_network_from_plans`` from the allow-listed names, and loads each fold's
weights weights-only (:mod:`.checkpoint`). :class:`NnUNetModel` is a torch module (its
``forward`` is the network's, with the active fold's weights) that segments a
:class:`~napari_medseg.types.Volume` the way ``nnUNetPredictor`` does: nnU-Net's own
preprocessor (transpose, crop to non-zero, its normalisation, resampling to the plan's
spacing), sliding windows (:mod:`.nnunet_window`), logits averaged over folds, and nnU-Net's
own way back to the input grid. The result lies on the volume's own voxel grid, so its
geometry is the volume's, exactly. Grad-CAM runs the same way
(:meth:`NnUNetModel.grad_cam_volume`, :mod:`.nnunet_cam`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ...config import ModelConfig
from ...control import ProgressCallback, StopCheck, check_stop
from .checkpoint import load_checkpoint, state_dict_of
from .errors import ExternalModelError, require
from .nnunet_plans import NnUNetFolder, read_nnunet_folder
from .nnunet_window import mirror_combinations, sliding_window_logits, window_slicers
from ..seeded_random import SeededRandom
from .sampling import active_dropout, check_method, require_dropout, sample_progress

__all__ = ["NnUNetModel", "open_nnunet"]

logger = logging.getLogger(__name__)


class NnUNetModel(nn.Module):
    """An nnU-Net model folder: its network, the weights of each fold, and its plans.

    Attributes:
        network: the nnU-Net network, mapping (B, 1, *patch) to logits (B, K, *patch).
        folder: the checked folder (:class:`~.nnunet_plans.NnUNetFolder`).
        fold_states: fold name -> state dict (CPU tensors).
        mirror_axes: the checkpoint's ``inference_allowed_mirroring_axes`` (patch axes), or None.
        config: a :class:`~napari_medseg.config.ModelConfig` describing it to the rest of the
            project (architecture ``"nnunet"``, class names, patch size, modality).
        bundle_path: the folder; ``bundle_meta``: trainer, plans, configuration, folds.
    """

    #: The inference engine hands whole volumes to :meth:`predict_volume` (nnU-Net's own
    #: preprocessing and windows) instead of its own model-grid path.
    segments_volumes = True

    def __init__(self, folder: NnUNetFolder, network: nn.Module, fold_states: dict, mirror_axes) -> None:
        super().__init__()
        self.network = network
        self.folder = folder
        self.fold_states = fold_states
        self.mirror_axes = mirror_axes
        self.active_fold = next(iter(fold_states))
        self.network.load_state_dict(fold_states[self.active_fold])
        dims = len(folder.patch_size)
        spacing = folder.plans["configurations"][folder.configuration].get("spacing") or [1.0] * dims
        self.config = ModelConfig(
            architecture="nnunet", spatial_dims=dims, in_channels=1, class_names=folder.class_names,
            modality=folder.modality, patch_size=folder.patch_size, normalization={"method": "nnunet"},
            target_spacing=tuple(float(s) for s in ([1.0] * (3 - dims) + list(spacing))),
            gradcam_layer=default_gradcam_layer(network),
            extra={"label_values": list(folder.label_values), "external": "nnunet"},
        )  # fmt: skip
        self.bundle_path = folder.path
        self.bundle_meta = {"name": folder.path.name, "version": "", "trainer": folder.trainer,
                            "plans": folder.plans_name, "configuration": folder.configuration,
                            "folds": list(fold_states)}  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, K, *S) of (B, 1, *S) preprocessed input, with the active fold's weights."""
        return self.network(x)

    def use_fold(self, fold: str) -> None:
        """Load ``fold``'s weights into the network (``forward`` then uses them)."""
        if fold not in self.fold_states:
            raise ValueError(f"fold {fold!r} is not in this model; it has {list(self.fold_states)}")
        self.network.load_state_dict(self.fold_states[fold])
        self.active_fold = fold

    def training_copy(self, fold: str | None = None) -> NnUNetModel:
        """A copy to fine-tune: its one fold is ``fold`` (default the active one), whose
        weights the network holds; the parent's other folds are left out (nnU-Net: a new
        folder with that fold)."""
        fold = self.active_fold if fold is None else fold
        if fold not in self.fold_states:
            raise ValueError(f"fold {fold!r} is not in this model; it has {list(self.fold_states)}")
        others, self.fold_states = self.fold_states, {fold: self.fold_states[fold]}
        try:
            copied = copy.deepcopy(self)
        finally:
            self.fold_states = others
        copied.use_fold(fold)
        return copied

    def keep_trained_weights(self) -> None:
        """Make the network's current (trained) weights the active fold's."""
        self.fold_states[self.active_fold] = {k: v.detach().to("cpu", copy=True) for k, v in self.network.state_dict().items()}

    def training_arrays(self, volume, sparse: np.ndarray, reference: np.ndarray | None = None):
        """The scan, strokes and reference on the network's grid (:mod:`.training`)."""
        from .training import nnunet_training_arrays

        return nnunet_training_arrays(self, volume, sparse, reference)

    def predict_volume(
        self,
        image: np.ndarray,
        spacing: Sequence[float],
        *,
        folds: Sequence[str] | None = None,
        mirroring: bool = True,
        geometry: object = None,
        device: torch.device | str = "cpu",
        progress: ProgressCallback = None,
        should_stop: StopCheck = None,
    ) -> np.ndarray:
        """Class probabilities of a scan, as ``nnUNetPredictor`` computes them.

        Args:
            image: (z, y, x) voxels in SimpleITK's array order (what
                :func:`napari_medseg.read_volume` gives), any real dtype.
            spacing: (z, y, x) voxel size in mm.
            folds: folds to average (logits, as nnU-Net does); default all.
            mirroring: test-time mirroring over the checkpoint's allowed axes.
            geometry: the scan's grid; not used (nnU-Net reads the spacing only, as its
                predictor does for an array).

        Returns:
            (K, z, y, x) float32 probabilities on ``image``'s own grid.
        """
        data, properties = self._preprocess(image, spacing)
        logits = self.fold_logits(data, folds=folds, mirroring=mirroring, device=torch.device(device),
                                  progress=progress, should_stop=should_stop)  # fmt: skip
        return self._to_scan(logits, properties)

    def grad_cam_volume(self, image: np.ndarray, spacing: Sequence[float], *, explainer, target_class: int,
                        region: np.ndarray | None = None, folds: Sequence[str] | None = None, geometry: object = None,
                        device: torch.device | str = "cpu", progress: ProgressCallback = None,
                        should_stop: StopCheck = None) -> np.ndarray:  # fmt: skip
        """Grad-CAM (or Grad-CAM++) of one class, computed on nnU-Net's preprocessed grid with
        its windows and Gaussian weights, averaged over ``folds`` (default all), without
        mirroring, and mapped back nnU-Net's way (:mod:`.nnunet_cam`).

        Args:
            explainer: explains windows of the network (:data:`.cam.WindowExplainer`).
            target_class: index of the class explained.
            region: bool (z, y, x) on ``image``'s grid; default: the voxels predicted as
                ``target_class`` (the folds' unmirrored prediction).
            Others: as :meth:`predict_volume`; ``progress`` counts windows over all folds
            (and over the prediction of the default region first).

        Returns:
            (z, y, x) float32 map >= 0 on ``image``'s own grid.

        Raises:
            Cancelled: ``should_stop()`` returned True before a window.
            ValueError: a bad class, region, layer or method (each named).
        """
        from .nnunet_cam import nnunet_grad_cam

        return nnunet_grad_cam(self, image, spacing, explainer=explainer, target_class=target_class, region=region,
                               folds=folds, device=device, progress=progress, should_stop=should_stop)  # fmt: skip

    def sample_count(self, method: str, samples: int = 10) -> int:
        """How many uncertainty samples ``method`` draws (see :meth:`sample_probabilities`).

        Raises:
            ExternalModelError: ``ensemble`` with one fold, ``tta`` without allowed mirror
                axes, ``mc-dropout`` without dropout of p > 0 (each named).
            ValueError: an unknown method or a bad ``samples``.
        """
        return len(self._sample_plan(method, samples))

    def sample_probabilities(self, image: np.ndarray, spacing: Sequence[float], *, method: str, samples: int = 10,
                             seed: int = 0, geometry: object = None, device: torch.device | str = "cpu",
                             progress: ProgressCallback = None, should_stop: StopCheck = None) -> Iterator[np.ndarray]:  # fmt: skip
        """Uncertainty samples of a scan, one (K, z, y, x) float32 array on ``image``'s grid
        at a time (nnU-Net's preprocessing runs once):

        - ``ensemble``: one sample per fold, each fold's own prediction without mirroring
          (the folds' disagreement, not the augmentation's);
        - ``tta``: one sample per mirror combination of the checkpoint's allowed axes, the
          unmirrored one first (8 for a 3D model mirroring all axes), each the folds'
          average as nnU-Net averages them (logits);
        - ``mc-dropout``: ``samples`` passes with the network's dropout on (folds averaged,
          no mirroring), masks drawn from a private state seeded by ``seed``.

        Arguments as :meth:`predict_volume`; ``progress`` counts windows over all samples.

        Raises:
            Cancelled: ``should_stop()`` returned True before a window.
        """
        plan = self._sample_plan(method, samples)
        data, properties = self._preprocess(image, spacing)
        device = torch.device(device)
        random = SeededRandom(seed)
        for i, (folds, flips) in enumerate(plan):
            check_stop(should_stop)
            with random.active(device):
                logits = self.fold_logits(data, folds=folds, flips=flips, dropout=method == "mc-dropout", device=device,
                                          progress=sample_progress(progress, i, len(plan)), should_stop=should_stop)  # fmt: skip
            yield self._to_scan(logits, properties)

    def _sample_plan(self, method: str, samples: int) -> list[tuple[list[str], list[tuple[int, ...]]]]:
        """(folds, flips) of each sample of ``method``."""
        check_method(method, samples)
        folds, name = list(self.fold_states), f"nnU-Net model {self.folder.path.name}"
        if method == "ensemble":
            if len(folds) < 2:
                raise ExternalModelError(self.folder.path, f"ensemble uses the folds as members and {name} has one "
                                         f"(fold_{folds[0]}); use --uncertainty tta, or a folder with more folds")  # fmt: skip
            return [([fold], [()]) for fold in folds]
        if method == "tta":
            if not self.mirror_axes:
                raise ExternalModelError(self.folder.path, f"tta mirrors the checkpoint's allowed axes and {name} "
                                         "allows none (inference_allowed_mirroring_axes)")  # fmt: skip
            return [(folds, [flips]) for flips in [(), *mirror_combinations(self.mirror_axes)]]
        require_dropout(self.network, self.folder.path, name)
        return [(folds, [()])] * samples

    def fold_logits(self, data: torch.Tensor, *, folds=None, mirroring=True, flips=None, dropout=False,
                    device=torch.device("cpu"), progress: ProgressCallback = None,
                    should_stop: StopCheck = None) -> torch.Tensor:  # fmt: skip
        """Logits (K, *S) of preprocessed (1, *S) ``data``, averaged over ``folds``;
        ``flips`` replaces ``mirroring`` (see :func:`.nnunet_window.sliding_window_logits`),
        ``dropout`` runs the network's dropout modules in training mode. Folds are summed in
        place into the first fold's float16 logits and divided in place, as nnU-Net's
        predictor does: two (K, *S) arrays at most, never a third for the sum."""
        folds = list(folds) if folds is not None else list(self.fold_states)
        per_fold = len(window_slicers(_padded_shape(data.shape[1:], self.folder.patch_size), self.folder.patch_size))
        was_fold, was_training = self.active_fold, self.network.training
        self.network.eval().to(device)
        total = None
        try:
            with torch.inference_mode(), active_dropout(self.network) if dropout else nullcontext():
                for i, fold in enumerate(folds):
                    self.use_fold(fold)
                    logits = sliding_window_logits(
                        self.network, data, self.folder.patch_size, mirror_axes=self.mirror_axes if mirroring else None,
                        device=device, progress=progress, should_stop=should_stop, done=i * per_fold,
                        total=per_fold * len(folds), flips=flips,
                    )  # fmt: skip
                    if total is None:
                        total = logits
                    else:
                        total += logits
                    del logits
                if len(folds) > 1:
                    total /= len(folds)
        finally:
            self.use_fold(was_fold)
            self.network.train(was_training)
        return total

    def _preprocess(self, image: np.ndarray, spacing: Sequence[float]) -> tuple[torch.Tensor, dict]:
        """nnU-Net's preprocessed (1, *S) float32 data of a (z, y, x) scan, and its properties."""
        plans_manager, configuration, _ = self._managers()
        preprocessor = configuration.preprocessor_class(verbose=False)
        data, _, properties = preprocessor.run_case_npy(
            np.asarray(image, dtype=np.float32)[None], None, {"spacing": [float(s) for s in spacing]},
            plans_manager, configuration, self.folder.dataset,
        )  # fmt: skip
        return torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)), properties

    def _to_scan(self, logits: torch.Tensor, properties: dict) -> np.ndarray:
        """(K, z, y, x) float32 probabilities on the scan's grid, nnU-Net's own way back."""
        from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

        plans_manager, configuration, label_manager = self._managers()
        _, probabilities = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, plans_manager, configuration, label_manager, properties, return_probabilities=True,
            num_threads_torch=torch.get_num_threads(),
        )  # fmt: skip
        return np.ascontiguousarray(probabilities, dtype=np.float32)

    def _managers(self):
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        plans_manager = PlansManager(self.folder.plans)
        configuration = plans_manager.get_configuration(self.folder.configuration)
        return plans_manager, configuration, plans_manager.get_label_manager(self.folder.dataset)


def _padded_shape(shape: Sequence[int], patch: Sequence[int]) -> tuple[int, ...]:
    lead = len(shape) - len(patch)
    return tuple(shape[:lead]) + tuple(max(s, p) for s, p in zip(shape[lead:], patch))


def default_gradcam_layer(network: nn.Module) -> str:
    """The last decoder stage (the finest features before the segmentation head), by name."""
    names = [name for name, _ in network.named_modules() if name.startswith("decoder.stages.") and name.count(".") == 2]
    return names[-1] if names else ""


def open_nnunet(path: str | Path, *, folds: Sequence[str] | None = None, checkpoint_name: str = "checkpoint_final.pth") -> NnUNetModel:
    """Open an nnU-Net v2 trained-model folder (``Trainer__Plans__configuration``).

    Raises:
        ExternalModelError: nnU-Net not installed (the extra is named), a folder or plans
            outside the allow-lists, a refused or mismatching checkpoint, an unknown fold.
    """
    path = Path(path)
    require("nnunetv2", path)
    # nnU-Net's plans handling and preprocessor are imported now (about 2.5 s), as its own
    # predictor does while it is set up, not inside the first segmentation.
    require("nnunetv2.utilities.plans_handling.plans_handler", path)
    require("nnunetv2.preprocessing.preprocessors.default_preprocessor", path)
    folder = read_nnunet_folder(path, checkpoint_name)
    wanted = list(folds) if folds is not None else list(folder.folds)
    missing = [f for f in wanted if f not in folder.folds]
    if missing or not wanted:
        raise ExternalModelError(path, f"folds {missing or wanted} not found; the folder has {list(folder.folds)}")
    network = _build_network(folder)
    expected = network.state_dict()
    states, mirror_axes = {}, None
    for fold in wanted:
        file = folder.checkpoint(fold, checkpoint_name)
        checkpoint = load_checkpoint(file, path)
        _check_checkpoint(checkpoint, folder, file, path)
        states[fold] = _fitting_state(state_dict_of(checkpoint, "network_weights", file, path), expected, file, path)
        if fold == wanted[0]:
            mirror_axes = _mirror_axes(checkpoint.get("inference_allowed_mirroring_axes"), len(folder.patch_size), path)
    model = NnUNetModel(folder, network, states, mirror_axes)
    logger.info("opened nnU-Net model %s (folds %s)", path, wanted)
    return model.eval()


def _build_network(folder: NnUNetFolder) -> nn.Module:
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    architecture = folder.plans["configurations"][folder.configuration].get("architecture")
    if architecture is None:  # inherited: read_nnunet_folder checked the merged configuration
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        architecture = PlansManager(folder.plans).get_configuration(folder.configuration).configuration["architecture"]
    outputs = len(folder.class_names)
    try:
        return get_network_from_plans(
            architecture["network_class_name"], architecture["arch_kwargs"], architecture.get("_kw_requires_import", []),
            1, outputs, allow_init=False, deep_supervision=False,
        )  # fmt: skip
    except (TypeError, ValueError, RuntimeError, AssertionError) as err:
        raise ExternalModelError(folder.path, f"plans.json arch_kwargs do not build {architecture['network_class_name']}: {err}") from None


def _check_checkpoint(checkpoint, folder: NnUNetFolder, file: Path, path: Path) -> None:
    configuration = (checkpoint.get("init_args") or {}).get("configuration") if isinstance(checkpoint.get("init_args"), dict) else None
    if configuration is not None and configuration != folder.configuration:
        raise ExternalModelError(path, f"{file.parent.name}/{file.name} was trained as {configuration!r}, the folder says {folder.configuration!r}")


def _fitting_state(state: dict, expected: dict, file: Path, path: Path) -> dict:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise ExternalModelError(
            path, f"{file.parent.name}/{file.name} does not fit the network of plans.json: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, shape mismatches {shapes[:3]}",
        )  # fmt: skip
    return {k: v.to(expected[k].dtype) for k, v in state.items()}


def _mirror_axes(axes, dims: int, path: Path) -> tuple[int, ...] | None:
    if axes is None:
        return None
    try:
        axes = tuple(int(a) for a in axes)
    except (TypeError, ValueError):
        raise ExternalModelError(path, f"checkpoint inference_allowed_mirroring_axes {axes!r} must be integers") from None
    if any(not 0 <= a < dims for a in axes):
        raise ExternalModelError(path, f"checkpoint inference_allowed_mirroring_axes {axes} must lie in 0..{dims - 1}")
    return axes
