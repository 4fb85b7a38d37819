"""Whole-volume segmentation: preprocess, predict, post-process, map back to the scan."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ..postprocess import PostprocessSettings, apply_in_slabs, fit_postprocess
from ..io.limits import release_heap
from ..preprocess import Prepared, argmax_labels, prepare_for_model, restore_into, zero_probabilities
from ..types import Volume
from ..control import ProgressCallback, StopCheck
from .device import autocast_dtype, precision_name, select_device
from .engine import predict_probabilities
from .locator import LocatorSettings, find_brain

logger = logging.getLogger(__name__)


@dataclass
class Segmentation:
    """A segmentation on the input's own grid.

    Attributes:
        labels: (z, y, x) uint8 class indices.
        probabilities: (z, y, x, K) float32, summing to 1 over K; stored class-major (each
            class's volume contiguous, :func:`~napari_medseg.preprocess.classes_last`).
        class_names: K names, background first.
        timings: seconds per stage ("preprocess", "network", "postprocess", "restore", "total").
        device: where the network ran; ``precision``: autocast dtype or "fp32".
        postprocess: the bundle's post-processing settings plus, under "applied", what
            was done (brain mask source, atlas fit).
    """

    labels: np.ndarray
    probabilities: np.ndarray
    class_names: tuple[str, ...]
    timings: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"
    precision: str = "fp32"
    postprocess: dict[str, Any] = field(default_factory=dict)


def segment(
    volume: Volume,
    model: torch.nn.Module,
    *,
    device: str | torch.device | None = "auto",
    precision: str = "auto",
    batch_size: int | None = None,
    postprocessing: bool = True,
    refine: bool = False,
    progress: ProgressCallback = None,
    should_stop: StopCheck = None,
    inspect: Callable[[np.ndarray, Any, np.ndarray | None], None] | None = None,
    allocate: Callable[[tuple[int, ...]], np.ndarray] | None = None,
    allocate_model: Callable[[tuple[int, ...]], np.ndarray] | None = None,
) -> Segmentation:
    """Segment ``volume`` with a model carrying ``.config`` (see :mod:`napari_medseg.models`).

    ``postprocessing``: the bundle's (the brain locator runs either way); ``refine``: also its
    steps kept on request (:mod:`napari_medseg.postprocess.mixture`), recorded in ``.postprocess``.
    ``inspect(probabilities, prepared, brain)``, if given, sees the network's (K, z, y, x)
    probabilities on the model grid before post-processing and the locator's brain mask (or
    None), for the OOD assessment; it must not keep them: post-processing rewrites them in place.
    ``allocate(shape)``, if given, returns a zero-filled float32 (z, y, x, K) array for the
    input-grid probabilities (default :func:`~napari_medseg.preprocess.zero_probabilities`;
    e.g. a ``numpy.memmap`` on a new file when they would not fit in memory), and
    ``allocate_model(shape)`` one for the (K, z, y, x) model-grid probabilities.

    Memory beyond the input: the model-grid image (until post-processed), the (K, ...) float32
    model-grid probabilities (or ``allocate_model``'s array), the post-processing's working
    arrays, one class at a time while mapping back, the uint8 labels and ``allocate``'s array.
    Raises ``Cancelled`` when ``should_stop()`` returns True between batches.
    """
    config = model.config
    settings = PostprocessSettings.from_config(config, postprocessing, refine=refine)  # refused or warned about first
    torch_device = select_device(device)
    amp = autocast_dtype(torch_device, precision)
    if getattr(model, "segments_volumes", False):  # e.g. an nnU-Net folder: its own preprocessing and windows
        from .external import segment_external

        return segment_external(volume, model, device=torch_device, progress=progress, should_stop=should_stop,
                                allocate=allocate, inspect=inspect)  # fmt: skip
    timings: dict[str, float] = {}
    start = time.perf_counter()
    prepared = prepare_for_model(volume, config)
    timings["preprocess"] = time.perf_counter() - start

    brain, found = find_brain(model, prepared.image, prepared.geometry, torch_device, timings)
    mark = time.perf_counter()
    out = None if allocate_model is None else allocate_model((len(config.class_names), *prepared.image.shape))
    probabilities = predict_probabilities(model, prepared.image, device=torch_device, amp=amp, batch_size=batch_size,
                                          progress=progress, should_stop=should_stop, out=out,
                                          within=brain)  # fmt: skip
    timings["network"] = time.perf_counter() - mark

    if inspect is not None:
        inspect(probabilities, prepared, brain)
        release_heap()  # what the score freed, before the post-processing's arrays come
    mark = time.perf_counter()
    record = _postprocess(model, prepared, probabilities, settings, brain, found)
    del brain  # applied
    timings["postprocess"] = time.perf_counter() - mark
    prepared.drop_image()  # not needed to map back: its memory goes before the input grid's arrays come
    release_heap()  # and the post-processing's freed blocks with it

    mark = time.perf_counter()
    shape = (*prepared.input_shape, probabilities.shape[0])
    restored = restore_into(probabilities, prepared, zero_probabilities(shape) if allocate is None else allocate(shape))
    del probabilities
    labels = argmax_labels(restored)
    timings["restore"] = time.perf_counter() - mark
    timings["total"] = time.perf_counter() - start
    logger.info("segmented %s in %.1f s on %s", volume.shape, timings["total"], torch_device)
    return Segmentation(
        labels=labels, probabilities=restored, class_names=tuple(config.class_names),
        timings=timings,
        device=str(torch_device),
        precision=precision_name(amp),
        postprocess=record,
    )


def _postprocess(
    model: torch.nn.Module, prepared: Prepared, probabilities: np.ndarray, settings: PostprocessSettings, brain, found
) -> dict[str, Any]:
    """The brain the model's locator found (``brain`` mask and ``found`` details, or None; always
    applied: it is part of the model) and the post-processing ``settings`` to run, applied in
    place to the (K, z, y, x) model-grid ``probabilities``; returns the record of both for
    :attr:`Segmentation.postprocess`."""
    record = settings.to_dict()
    details: dict[str, Any] = {}
    if found is not None:
        details["locator"] = found
        record["locator"] = LocatorSettings.from_config(model.config).to_dict()
    if settings or brain is not None:
        fit = fit_postprocess(prepared.image, probabilities, settings, geometry=prepared.geometry, brain=brain)
        details.update(fit.details)
        apply_in_slabs(fit, prepared.image, probabilities)
    return {**record, "applied": details} if record else {}
