"""The headless jobs behind ``medseg segment`` (and the panel's export): run and write."""

from __future__ import annotations

import glob
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..control import ProgressCallback, StopCheck
from ..preprocess import classes_last
from ..types import Volume
from ..uncertainty.ood_first_use import ood_inspector  # numpy only, no torch
from .result_set import ResultSet

logger = logging.getLogger(__name__)
UNCERTAINTY_METHODS = ("none", "mc-dropout", "tta", "ensemble")
UNCERTAINTY_MAPS = ("entropy", "aleatoric", "epistemic")  # total, aleatoric, epistemic (nats)


def run_segmentation(
    volume: Volume,
    model: Any,
    output_dir: str | Path,
    stem: str,
    *,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int | None = None,
    postprocessing: bool = True,
    refine: bool = False,
    uncertainty: str = "none",
    samples: int = 10,
    ensemble: Sequence[Any] = (),
    gradcam: Sequence[str | int] = (),
    gradcam_method: str = "gradcam",
    dicom_seg: bool = False,
    figure: bool = False,
    overwrite: bool = False,
    memory_budget: int | None = None,
    progress: ProgressCallback = None,
    should_stop: StopCheck = None,
) -> dict[str, Path]:
    """Segment ``volume`` and write everything asked for into ``output_dir``, on the input's grid.

    Writes ``<stem>_seg.nii.gz`` (the bundle's label values, ``config.label_values``: class
    indices unless the bundle maps them, e.g. to FreeSurfer ids; uint8 or uint16), ``<stem>_prob.nii.gz`` (float32, classes on the
    last axis), with ``uncertainty`` also ``<stem>_entropy/_aleatoric/_epistemic.nii.gz``
    (nats), for each ``gradcam`` class ``<stem>_gradcam_<class>.nii.gz``, and always
    ``<stem>_report.json`` (model, classes, volumes in mL, components, OOD score and flag,
    timings, device); with ``dicom_seg`` also ``<stem>_seg.dcm``, a DICOM SEG of the labels
    that references the source series (``volume`` must have been read from DICOM); with
    ``figure`` also ``<stem>_summary.png``, the case at a glance
    (:func:`~napari_medseg.export.figure.write_case_summary`; needs matplotlib).

    The files are written as a set (:class:`~napari_medseg.export.result_set.ResultSet`): the
    folder is locked for the run, written into a staging folder and moved in at the end, the
    report last; a failure or Ctrl-C leaves it as it was.

    Args:
        postprocessing, refine: as :func:`~napari_medseg.inference.segment`, maps included.
        ensemble: further models for ``uncertainty="ensemble"`` (with ``model``).
        overwrite: replace earlier results of ``stem`` in ``output_dir``; without it any
            of them refuses the run before the segmentation starts.
        memory_budget: bytes each probability array (the network's (K, z, y, x) float32
            on the model grid, the (z, y, x, K) float32 on the input grid) may take in
            memory; a larger one goes to a temporary file in the output folder's staging
            folder (a ``numpy.memmap``, removed with it) and is used and written from
            there. Default: :func:`probability_budget` of the input.
    Returns output name ("seg", "prob", "entropy", ..., "gradcam_<class>", "report") -> path.

    Raises:
        ResultsExistError: earlier results of ``stem`` exist and ``overwrite`` is False.
        FolderLockedError: another run is writing into ``output_dir``.
        ResultSetError: a file could not be written (named); nothing of this run is kept.
    """
    from ..inference import segment

    targets = _check_request(model, uncertainty, gradcam, figure, [model, *ensemble], samples)
    names = output_names(stem, uncertainty, [name for _, name in targets], dicom_seg=dicom_seg, figure=figure)
    maps: dict[str, np.ndarray] = {}  # kept for the figure
    extra: dict[str, Any] = {}  # what the report adds: OOD, uncertainty and Grad-CAM summaries
    budget = probability_budget(volume) if memory_budget is None else memory_budget
    options = dict(device=device, precision=precision, batch_size=batch_size, postprocessing=postprocessing,
                   refine=refine, progress=progress, should_stop=should_stop)  # fmt: skip
    with ResultSet(output_dir, output_family(stem), overwrite=overwrite) as results:
        result = segment(
            volume, model, **options, inspect=ood_inspector(model, volume, lambda ood: extra.update(ood=ood.as_dict())),
            allocate=lambda shape: classes_last(probability_array((shape[-1], *shape[:-1]), budget, results.staging)),
            allocate_model=lambda shape: probability_array(shape, budget, results.staging, "model-probabilities.f32"),
        )  # fmt: skip
        _write_segmentation(results, names, result, volume, model)
        _write_maps(results, names, volume, model, extra, maps if figure else None, options, uncertainty=uncertainty,
                    samples=samples, ensemble=ensemble, targets=targets, gradcam_method=gradcam_method)  # fmt: skip
        if figure:
            _write_figure(results, names, result, volume, model, extra, maps.pop("total", None), stem)
        report = _write_report(results, names, result, volume, model, extra, stem)
        written = results.commit(last=names["report"])
    _log_report_warnings(stem, report, model)
    return {key: written[name] for key, name in names.items()}


def _check_request(model: Any, uncertainty: str, gradcam: Sequence[str | int], figure: bool,
                   members: Sequence[Any] = (), samples: int = 10) -> list[tuple[Any, str]]:  # fmt: skip
    """Refuse what cannot be done before any work (an external model's uncertainty it
    cannot sample, named with the reason); returns the Grad-CAM targets as (what was
    asked, class name) pairs."""
    from ..explain.scan import class_index
    from ..models.external import is_external

    if uncertainty not in UNCERTAINTY_METHODS:
        raise ValueError(f"uncertainty {uncertainty!r} must be one of {UNCERTAINTY_METHODS}")
    if uncertainty != "none" and is_external(model):
        from ..uncertainty.external import external_sample_count

        external_sample_count(list(members) if uncertainty == "ensemble" else [model], uncertainty, samples)
    if figure:
        from .figure import require_matplotlib

        require_matplotlib()
    names = model.config.class_names
    return [(target, names[class_index(names, target)]) for target in gradcam]


def _write_maps(results, names, volume: Volume, model: Any, extra: dict[str, Any], keep, options: dict[str, Any], *,
               uncertainty: str, samples: int, ensemble, targets, gradcam_method: str) -> None:  # fmt: skip
    """The uncertainty maps and the Grad-CAM maps asked for; what they found goes to ``extra``."""
    if uncertainty != "none":
        extra.update(_write_uncertainty(results, names, volume, model, ensemble, uncertainty, samples, extra, options, keep))
    if targets:
        progress, should_stop = options["progress"], options["should_stop"]
        extra["gradcam"] = _write_gradcam(results, names, volume, model, targets, gradcam_method, progress, should_stop)


def _write_segmentation(results, names: dict[str, str], result, volume: Volume, model: Any) -> None:
    """The labels (the bundle's values), the probabilities and, when named, the DICOM SEG."""
    from ..io import write_volume

    labels = model.config.encode_labels(result.labels)
    results.write(names["seg"], lambda path: write_volume(path, labels, volume, kind="labels"))
    results.write(names["prob"], lambda path: write_volume(path, result.probabilities, volume, kind="image"))
    if "dicom_seg" in names:
        results.write(names["dicom_seg"], lambda path: write_model_dicom_seg(path, result.labels, volume, model))


def _write_figure(results, names, result, volume: Volume, model: Any, extra: dict[str, Any], total, stem: str) -> None:
    """The summary figure into the set (before the report, while the probabilities are held)."""
    from .figure import write_case_summary

    results.write(names["figure"], lambda path: write_case_summary(path, volume, result, model, stem=stem, total=total, extra=extra))


def _write_report(results, names: dict[str, str], result, volume: Volume, model: Any, extra: dict[str, Any], stem: str) -> dict[str, Any]:
    """The report (with the model's warnings about this scan, also logged) into the set; returns it."""
    from ..models.applicability import model_warnings
    from .report import build_report, write_json

    warnings = model_warnings(volume, model.config)
    for note in warnings:
        logger.warning("%s: %s", stem, note)
    extra["model_warnings"] = warnings
    report = build_report(volume, result, model, extra)
    result.probabilities = None  # a memmap's file goes with the staging folder
    report["outputs"] = {key: name for key, name in names.items() if key != "report"}
    results.write(names["report"], lambda path: write_json(path, report))
    return report


def probability_budget(volume: Volume) -> int:
    """Bytes each probability array of a run on ``volume`` may take in memory: the input's
    own bytes, and at most the share of the free memory that readers may take
    (:data:`~napari_medseg.io.limits.MEMORY_FRACTION`). The whole run is to stay within 4
    times the input beyond the runtime and the model (issue 12): the input itself, the
    model-grid image, and while mapping back one class on each grid leave about one input's
    worth for the probabilities (``bench/segment_memory.py`` measures it)."""
    from ..io.limits import MEMORY_FRACTION, available_memory_bytes

    return int(min(volume.array.nbytes, MEMORY_FRACTION * available_memory_bytes()))


def probability_array(shape: tuple[int, ...], budget: int, folder: Path, name: str = "probabilities.f32") -> np.ndarray:
    """A zero-filled float32 array of ``shape``: in memory when it fits in ``budget`` bytes
    (``numpy.zeros``: pages are zeroed when first touched), else a ``numpy.memmap`` on a new
    file ``name`` in ``folder`` (its reserved blocks read as zeros)."""
    n_bytes = int(np.prod(shape, dtype=np.int64)) * 4
    if n_bytes <= budget:
        return np.zeros(shape, np.float32)
    path = Path(folder) / name
    logger.info("probabilities (%s) go to %s: %d bytes exceed the memory budget %d", shape, path, n_bytes, budget)
    try:
        with open(path, "xb") as handle:
            # Blocks reserved now: a full disk is an error here, not a SIGBUS while writing.
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(handle.fileno(), 0, n_bytes)
            else:  # pragma: no cover - macOS, Windows
                handle.truncate(n_bytes)
        return np.memmap(path, dtype=np.float32, mode="r+", shape=tuple(shape))
    except OSError as exc:
        raise OSError(exc.errno, f"could not create {path} for the probabilities: {exc.strerror or exc}") from exc


def output_names(stem: str, uncertainty: str, gradcam_classes: Sequence[str], *, dicom_seg: bool = False,
                 figure: bool = False) -> dict[str, str]:  # fmt: skip
    """Output key -> file name of one case, the report last (see :func:`run_segmentation`)."""
    names = {"seg": f"{stem}_seg.nii.gz", "prob": f"{stem}_prob.nii.gz"}
    if dicom_seg:
        names["dicom_seg"] = f"{stem}_seg.dcm"
    if uncertainty != "none":
        names.update({key: f"{stem}_{key}.nii.gz" for key in UNCERTAINTY_MAPS})
    for name in gradcam_classes:
        names[f"gradcam_{safe_name(name)}"] = f"{stem}_gradcam_{safe_name(name)}.nii.gz"
    if figure:
        names["figure"] = f"{stem}_summary.png"
    names["report"] = f"{stem}_report.json"
    return names


def output_family(stem: str) -> list[str]:
    """Glob patterns of every file a run for ``stem`` may write, whatever its options."""
    stem = glob.escape(stem)
    return [f"{stem}_{key}.nii.gz" for key in ("seg", "prob", *UNCERTAINTY_MAPS)] + [
        f"{stem}_seg.dcm",
        f"{stem}_gradcam_*.nii.gz",
        f"{stem}_summary.png",
        f"{stem}_report.json",
    ]


def write_model_dicom_seg(path: str | Path, labels: Any, source: Volume, model: Any, source_meta: dict | None = None) -> Path:
    """A model's segmentation as a DICOM SEG referencing the scan's DICOM series.

    Args:
        path: the .dcm file to write.
        labels: (z, y, x) class indices of ``model.config`` on ``source``'s grid.
        source: the scan.
        model: a loaded bundle (classes, colours, label values, name and version).
        source_meta: where the scan came from (a layer's ``medseg`` metadata); default
            ``source.meta``.

    Raises:
        VolumeWriteError: the scan was not read from DICOM, or its headers cannot be referenced.
    """
    from ..io.dicom_seg import dicom_source_files, write_dicom_seg
    from .report import model_identity

    config, identity = model.config, model_identity(model)
    name = identity["name"] or config.architecture
    return write_dicom_seg(
        path, labels, source, class_names=config.class_names, class_colors=config.rgba_colors(),
        label_values=config.label_values, source_files=dicom_source_files(source_meta or source.meta),
        algorithm=(name, str(identity["version"])), series_description=f"{name} segmentation",
    )  # fmt: skip


def safe_name(name: str) -> str:
    """A class name as it appears in file names: lower case, other characters as ``_``."""
    return "".join(ch if ch.isalnum() else "_" for ch in name.lower())


def _write_uncertainty(results, names, volume, model, ensemble, method, samples, extra, options, keep=None) -> dict[str, Any]:
    """Write the three uncertainty maps; returns the report's ``uncertainty`` and ``ood``.
    A ``keep`` dict receives the total map as ``"total"`` (for the summary figure)."""
    from ..io import write_volume
    from ..uncertainty import estimate_uncertainty

    members = [model, *ensemble] if method == "ensemble" else [model]
    estimate = estimate_uncertainty(
        volume, members if method == "ensemble" else model, method=method, samples=samples, **options
    )
    for key, values in zip(UNCERTAINTY_MAPS, (estimate.total, estimate.aleatoric, estimate.epistemic)):
        results.write(names[key], lambda path, values=values: write_volume(path, values, volume, kind="image"))
    if keep is not None:
        keep["total"] = estimate.total
    return {
        "uncertainty": {**estimate.report(), "units": "nats", "models": [_name(m) for m in members]},
        "ood": {**extra.get("ood", {}), "foreground_epistemic": estimate.ood.foreground_epistemic},
    }


def _write_gradcam(results, names, volume, model, targets, method, progress, should_stop) -> dict[str, Any]:
    """Write one Grad-CAM map per (target, class name); returns the report's ``gradcam``."""
    from ..explain.scan import explain_scan
    from ..io import write_volume

    section = {"method": method, "layer": model.config.gradcam_layer or "architecture default", "classes": []}
    folds = (getattr(model, "bundle_meta", None) or {}).get("folds")
    if folds:  # an nnU-Net folder: one map per fold, averaged, unmirrored
        section.update(folds_averaged=list(folds), mirroring=False)
    for target, name in targets:
        start = time.perf_counter()
        cam = explain_scan(volume, model, target_class=target, method=method, progress=progress, should_stop=should_stop)
        results.write(names[f"gradcam_{safe_name(name)}"], lambda path: write_volume(path, cam, volume, kind="image"))
        section["classes"].append({"class": name, "seconds": round(time.perf_counter() - start, 2)})
    return section


def _log_report_warnings(stem: str, report: dict[str, Any], model: Any) -> None:
    """Volumes outside the model's training range and an out-of-distribution verdict, logged."""
    for name, entry in report.get("volumes_outside_training_range", {}).items():
        logger.warning("%s: %s %.1f mL lies outside the range the model was trained on (%.1f-%.1f mL)",
                       stem, name, entry["ml"], *entry["range"])  # fmt: skip
    ood = report.get("ood", {})
    if ood.get("flag"):
        tests = "; ".join(f"{name}: {signal['detail']}" for name, signal in ood.get("signals", {}).items() if signal["flag"])
        logger.warning("%s looks out of distribution for %s (%s)", stem, _name(model), tests)


def _name(model: Any) -> str:
    return (getattr(model, "bundle_meta", {}) or {}).get("name", type(model).__name__)
