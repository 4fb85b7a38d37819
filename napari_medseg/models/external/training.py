"""What fine-tuning an external model trains on: the scan, its strokes and the segmentation
kept away from them, all on the network's own grid, mapped by the model's own library.

- nnU-Net: its preprocessor (``run_case_npy``) with the strokes as the segmentation it
  carries through transpose, crop and resampling, as nnU-Net prepares its training cases;
- MONAI: the bundle's pre-transforms on the scan, then MONAI's ``ResampleToMatch`` (nearest)
  of the strokes onto the transformed scan's grid, from the two affines.

The arrays keep the library's axis order (nnU-Net's after ``transpose_forward``, MONAI's
(x, y, z)); fine-tuning only needs image, strokes and windows to share it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...types import Volume

__all__ = ["TrainingArrays", "monai_training_arrays", "nnunet_training_arrays"]


@dataclass(frozen=True)
class TrainingArrays:
    """A scan and its strokes on an external network's grid (axes in the library's order).

    Attributes:
        image: (A, B, C) float32, preprocessed as the network sees it.
        labels: (A, B, C) int16 sparse strokes: 0 = not annotated, k + 1 = class k.
        reference: (A, B, C) int16 class indices kept away from the strokes, -1 where
            unknown (outside the scan), or None.
        patch: the network's training window along (A, B, C) (3D) or (B, C) (2D: slices
            are taken along A).
    """

    image: np.ndarray
    labels: np.ndarray
    reference: np.ndarray | None
    patch: tuple[int, ...]


def nnunet_training_arrays(model, volume: Volume, sparse: np.ndarray, reference: np.ndarray | None) -> TrainingArrays:
    """``volume`` and its (z, y, x) ``sparse`` strokes (and ``reference`` classes) through
    nnU-Net's own preprocessor; ``model`` is an :class:`~.nnunet_model.NnUNetModel`."""
    plans_manager, configuration, _ = model._managers()
    preprocessor = configuration.preprocessor_class(verbose=False)
    channels = [np.asarray(sparse, dtype=np.int16)]
    if reference is not None:  # shifted by one: nnU-Net marks 0 outside the scan's non-zero box as -1
        channels.append(np.asarray(reference, dtype=np.int16) + 1)
    data, mapped, _ = preprocessor.run_case_npy(
        np.asarray(volume.array, dtype=np.float32)[None], np.stack(channels), {"spacing": [float(s) for s in volume.spacing]},
        plans_manager, configuration, model.folder.dataset,
    )  # fmt: skip
    labels = np.clip(mapped[0], 0, None).astype(np.int16)
    dense = None if reference is None else np.clip(mapped[1].astype(np.int16) - 1, -1, None)
    return TrainingArrays(np.ascontiguousarray(data[0], dtype=np.float32), labels, dense, tuple(model.folder.patch_size))


def monai_training_arrays(model, volume: Volume, sparse: np.ndarray, reference: np.ndarray | None) -> TrainingArrays:
    """``volume`` through the bundle's pre-transforms and its strokes (and ``reference``)
    resampled onto the result by MONAI (nearest neighbour, 0 outside: not annotated / -1);
    ``model`` is a :class:`~.monai_model.MonaiBundleModel`."""
    from monai.transforms import ResampleToMatch

    from .monai_pipeline import build_preprocessing, scan_metatensor

    key = model.inference.image_key
    prepared = build_preprocessing(model.inference)({key: scan_metatensor(volume.array, volume.geometry)})[key]
    resample = ResampleToMatch(mode="nearest", padding_mode="zeros")

    def on_grid(values: np.ndarray) -> np.ndarray:  # float32 holds class values exactly
        moved = resample(scan_metatensor(values, volume.geometry), img_dst=prepared)
        return np.rint(np.asarray(moved[0].detach().cpu().numpy())).astype(np.int16)

    labels = on_grid(np.asarray(sparse))
    dense = None if reference is None else on_grid(np.asarray(reference, dtype=np.int16) + 1) - 1
    image = np.ascontiguousarray(np.asarray(prepared[0].detach().cpu().numpy()), dtype=np.float32)
    roi = model.inference.inferer_kwargs.get("roi_size") or image.shape  # a SimpleInferer sees the whole scan
    return TrainingArrays(image, labels, dense, tuple(int(r) for r in roi))
