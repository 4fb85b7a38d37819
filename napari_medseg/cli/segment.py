"""``medseg segment INPUT -o OUTDIR``: labels, probabilities and a report with the input's geometry."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..resources import DEFAULT_MODEL

REFINE_HELP = (
    "also refine the tissue boundaries with the scan's own intensities (the bundle's per-scan mixture with the "
    "network as its prior, kept on request; the shipped brain bundles have one); the report records it"
)

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="segment a volume; writes <stem>_seg.nii.gz, <stem>_prob.nii.gz, <stem>_report.json",
        description="Segment a file or DICOM folder. Outputs keep the input's exact geometry.",
    )
    parser.add_argument("input", help="NIfTI/NRRD/MHA file, DICOM file or DICOM folder")
    parser.add_argument("-o", "--output", required=True, type=Path,
                        help="output folder (created if missing; locked while the run writes into it)")  # fmt: skip
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"bundle name or path (default {DEFAULT_MODEL})")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--batch", type=int, default=None, help="slices (2D) or windows (3D) per forward pass")
    parser.add_argument("--series", metavar="UID", help="SeriesInstanceUID to read from a DICOM folder")
    parser.add_argument("--no-postprocess", action="store_true", help="skip the bundle's post-processing (labels and uncertainty maps are then the network's own)")
    parser.add_argument("--refine", action="store_true", help=REFINE_HELP)
    parser.add_argument("--uncertainty", default="none", choices=["none", "mc-dropout", "tta", "ensemble"],
                        help="also write entropy (total), aleatoric and epistemic maps (nats); an nnU-Net folder's "
                        "ensemble is its folds and its tta its mirroring, a MONAI bundle's tta flips its roi")  # fmt: skip
    parser.add_argument("--samples", type=int, default=10,
                        help="samples for mc-dropout, and tta of our bundles (default 10)")  # fmt: skip
    parser.add_argument("--ensemble", nargs="+", default=None, metavar="MODEL",
                        help="further bundles for --uncertainty ensemble (default: the shipped bundles with the same "
                        "classes; none for an nnU-Net folder)")  # fmt: skip
    parser.add_argument("--gradcam", nargs="+", default=[], metavar="CLASS", help="write Grad-CAM maps for these classes (name or index)")
    parser.add_argument("--gradcam-method", default="gradcam", choices=["gradcam", "gradcam++"])
    parser.add_argument("--dicom-seg", action=argparse.BooleanOptionalAction, default=None,
                        help="also write <stem>_seg.dcm, a DICOM SEG referencing the source series "
                             "(default: on for DICOM inputs whose headers allow it)")  # fmt: skip
    parser.add_argument("--figure", action="store_true",
                        help="also write <stem>_summary.png: three planes with the labels, the uncertainty with its "
                             "scale, the volumes against the model's expected ranges (needs matplotlib)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true",
                        help="replace this input's earlier results in OUTDIR (default: refuse before segmenting)")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def output_stem(path: Path) -> str:
    """File name without .nii/.nii.gz/... ; a folder's own name for DICOM folders."""
    from ..io.reader import volume_stem

    return volume_stem(path.resolve())


def run(args: argparse.Namespace) -> int:
    from ..io import read_volume
    from ..models import load_model
    from ..models.external import is_external
    from ..export.run import run_segmentation
    from .progress import ProgressBar

    if args.figure:
        _check_figure_available()
    volume = read_volume(args.input, series_uid=args.series)
    dicom_seg = wants_dicom_seg(args.dicom_seg, volume, args.input)
    model = load_model(args.model, device="cpu")
    progress = None if args.quiet else ProgressBar("segment")
    ensemble = []
    if args.uncertainty == "ensemble" and (args.ensemble or not is_external(model)):  # nnU-Net: its folds
        ensemble = [load_model(name, device="cpu") for name in (args.ensemble or _default_ensemble(model))]
        if not ensemble:
            raise ValueError("--uncertainty ensemble needs further models: pass --ensemble MODEL ...")
    outputs = run_segmentation(
        volume,
        model,
        args.output,
        output_stem(Path(args.input)),
        device=args.device,
        precision=args.precision,
        batch_size=args.batch,
        postprocessing=not args.no_postprocess,
        refine=args.refine,
        uncertainty=args.uncertainty,
        samples=args.samples,
        ensemble=ensemble,
        gradcam=args.gradcam,
        gradcam_method=args.gradcam_method,
        dicom_seg=dicom_seg,
        figure=args.figure,
        overwrite=args.overwrite,
        progress=progress,
    )
    for path in outputs.values():
        print(path)
    return 0


def _check_figure_available() -> None:
    """Raises ValueError (a clear exit 2) before any work when --figure cannot be drawn."""
    from ..export.figure import FigureUnavailableError, require_matplotlib

    try:
        require_matplotlib()
    except FigureUnavailableError as exc:
        raise ValueError(f"--figure: {exc}") from None


def wants_dicom_seg(asked: bool | None, volume, input_path) -> bool:
    """Whether to write a DICOM SEG: as asked, or by default when the input allows one.

    Raises:
        ValueError: ``--dicom-seg`` asked for an input that cannot have one (named).
    """
    from ..io.dicom_seg import dicom_seg_problem

    if asked is False:
        return False
    problem = dicom_seg_problem(volume.meta)
    if problem is None:
        return True
    if asked:
        raise ValueError(f"--dicom-seg: no DICOM SEG can be written for {input_path}: {problem}")
    if volume.meta.get("format") == "dicom":
        logger.warning("%s: no DICOM SEG written: %s", input_path, problem)
    return False


def _default_ensemble(model) -> list[str]:
    """Shipped bundles other than ``model`` that predict the same classes."""
    from ..models import list_bundles

    own = getattr(model, "bundle_path", None)
    return [
        str(info.path)
        for info in list_bundles()
        if info.shipped and info.classes == tuple(model.config.class_names) and info.path != own
    ]
