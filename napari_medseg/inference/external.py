"""Segmentation by a model that maps whole volumes itself (an nnU-Net folder, a MONAI bundle)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ..preprocess import classes_last
from ..types import Geometry, Volume
from ..control import ProgressCallback, StopCheck

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScanGrid:
    """What ``segment``'s ``inspect`` callback reads of a preparation, for probabilities
    that already lie on the scan's own grid (the whole array is the scan's part)."""

    geometry: Geometry

    def scan_part(self, array: np.ndarray | None) -> np.ndarray | None:
        return array


def segment_external(
    volume: Volume,
    model: Any,
    *,
    device: torch.device,
    progress: ProgressCallback = None,
    should_stop: StopCheck = None,
    allocate: Callable[[tuple[int, ...]], np.ndarray] | None = None,
    inspect: Callable[[np.ndarray, Any, None], None] | None = None,
):
    """:func:`~napari_medseg.inference.segment.segment` for a model with ``predict_volume``
    (:class:`~napari_medseg.models.external.nnunet_model.NnUNetModel`,
    :class:`~napari_medseg.models.external.monai_model.MonaiBundleModel`): it is given the
    volume's array, spacing and geometry, and its probabilities already lie on ``volume``'s
    grid, so the geometry is the volume's own. Runs in float32 (nnU-Net uses autocast only on
    CUDA; nnU-Net with every fold and mirroring); no post-processing.
    ``inspect(probabilities (K, z, y, x), ScanGrid, None)`` sees the prediction as
    ``segment``'s callback does (the OOD decision; no locator, so no brain).

    Returns:
        A :class:`~napari_medseg.inference.segment.Segmentation`.
    """
    from ..preprocess import argmax_labels
    from .segment import Segmentation

    start = time.perf_counter()
    was_training = model.training
    try:
        probabilities = model.predict_volume(volume.array, volume.spacing, geometry=volume.geometry, device=device,
                                             progress=progress, should_stop=should_stop)  # fmt: skip
    finally:
        model.train(was_training)
    network = time.perf_counter() - start
    if inspect is not None:
        inspect(probabilities, ScanGrid(volume.geometry), None)
    shape = (*volume.shape, probabilities.shape[0])
    if allocate is None:  # already class-major on the scan's grid: a view, no copy
        restored = classes_last(np.ascontiguousarray(probabilities, dtype=np.float32))
    else:
        restored = allocate(shape)
        for k in range(probabilities.shape[0]):
            restored[..., k] = probabilities[k]
    del probabilities
    labels = argmax_labels(restored)
    total = time.perf_counter() - start
    logger.info("segmented %s with %s in %.1f s", volume.shape, model.config.extra.get("external"), total)
    return Segmentation(
        labels=labels, probabilities=restored, class_names=tuple(model.config.class_names),
        timings={"network": network, "restore": total - network, "total": total}, device=str(device), precision="fp32",
    )  # fmt: skip
