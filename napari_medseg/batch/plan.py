"""What every case of a cohort is run with: the model (resolved once) and the segment options."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from ..resources import DEFAULT_MODEL

__all__ = ["DEFAULT_MODEL", "CohortPlan", "default_ensemble", "make_plan"]


@dataclass(frozen=True)
class CohortPlan:
    """The model and options shared by all cases (sent to every worker; small and picklable).

    Attributes:
        model: the bundle name or path the user gave.
        model_path: the resolved bundle folder or archive.
        weights_sha256: the bundle's weights hash (the manifest's model identity).
        ensemble: further bundles (resolved paths) for ``uncertainty="ensemble"``; by default
            those ``medseg segment`` takes (:func:`default_ensemble`).
        device: "auto", "cpu", "cuda", "mps"; "auto" gives each worker a GPU when there are any.
        dicom_seg: also write ``<stem>_seg.dcm``: None (as ``medseg segment``: for DICOM inputs
            whose headers allow one), True (a case that cannot have one fails), False.
        figure: also write ``<stem>_summary.png`` (the case at a glance; the QC page links it).
        other fields: as for :func:`napari_medseg.export.run.run_segmentation`.
    """

    model: str
    model_path: str
    weights_sha256: str
    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None
    postprocessing: bool = True
    refine: bool = False
    uncertainty: str = "none"
    samples: int = 10
    ensemble: tuple[str, ...] = ()
    gradcam: tuple[str, ...] = ()
    gradcam_method: str = "gradcam"
    dicom_seg: bool | None = None
    figure: bool = False

    def model_identity(self) -> dict[str, Any]:
        """The model as the manifest records it (a different one means other results)."""
        return {"name": self.model, "weights_sha256": self.weights_sha256}

    def options(self) -> dict[str, Any]:
        """The options that change the results, as the manifest records them (the device is
        left out: a re-run on another machine need not redo finished cases)."""
        values = asdict(self)
        for key in ("model", "model_path", "weights_sha256", "device"):
            values.pop(key)
        for option in ("figure", "refine"):
            if not values[option]:
                values.pop(option)  # cohorts finished before the option existed stay finished
        values["ensemble"] = [_bundle_digest(path) for path in self.ensemble]
        return values


def make_plan(
    model: str,
    *,
    ensemble: Sequence[str] = (),
    uncertainty: str = "none",
    gradcam: Sequence[str | int] = (),
    **options: Any,
) -> CohortPlan:
    """Resolve the model (and ensemble members) once, before any case is submitted.

    Raises:
        BundleError: an unknown model name or a path that is not a bundle (named).
        ValueError: an unknown uncertainty method, or an ensemble without members.
    """
    from ..export.run import UNCERTAINTY_METHODS
    from ..models.catalog import resolve_bundle
    from ..models.external import detect

    if uncertainty not in UNCERTAINTY_METHODS:
        raise ValueError(f"uncertainty {uncertainty!r} must be one of {UNCERTAINTY_METHODS}")
    path = resolve_bundle(model)
    members = [resolve_bundle(member) for member in ensemble]
    if uncertainty == "ensemble" and not members and not detect(path):  # an external model samples itself
        members = default_ensemble(path)
        if not members:
            raise ValueError(
                f"uncertainty 'ensemble' needs further models and no shipped bundle predicts the classes of {model}: "
                "pass --ensemble MODEL ... (ensemble=[...])"
            )
    return CohortPlan(
        model=str(model),
        model_path=str(path),
        weights_sha256=_bundle_digest(path),
        uncertainty=uncertainty,
        ensemble=tuple(str(member) for member in members),
        gradcam=tuple(str(target) for target in gradcam),
        **options,
    )


def default_ensemble(model_path: Path) -> list[Path]:
    """The ensemble ``medseg segment`` uses when none is named: the shipped bundles other
    than the model that predict the same classes (in the catalogue's order)."""
    from ..models.bundle import read_config
    from ..models.catalog import list_bundles, load_model

    model_path = Path(model_path)
    config = read_config(model_path) if model_path.is_dir() else load_model(model_path).config  # an archive
    classes = tuple(config.class_names)
    return [info.path for info in list_bundles() if info.shipped and info.classes == classes and info.path.resolve() != model_path.resolve()]


def _bundle_digest(path: str | Path) -> str:
    """The weights hash of a bundle folder (from meta.json when recorded), of an archive, or
    of an external model folder (its plans, configs and checkpoints,
    :func:`~napari_medseg.models.external.model_files`)."""
    import hashlib

    from ..models.bundle import read_meta, weights_sha256
    from ..models.external import model_files
    from .manifest import file_sha256

    path = Path(path)
    if not path.is_dir():
        return file_sha256(path)
    files = model_files(path)
    if files:
        digest = hashlib.sha256()
        for file in files:
            digest.update(f"{file.relative_to(path).as_posix()}\0{file_sha256(file)}\n".encode())
        return digest.hexdigest()
    recorded = read_meta(path).get("weights_sha256")
    return recorded if isinstance(recorded, str) and recorded else weights_sha256(path)
