"""``medseg segment INPUT -o OUTDIR``: labels, probabilities and a report with the input's geometry."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

DEFAULT_MODEL = "brain-tissue-unet"
logger = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="segment a volume; writes <stem>_seg.nii.gz, <stem>_prob.nii.gz, <stem>_report.json",
        description="Segment a file or DICOM folder. Outputs keep the input's exact geometry.",
    )
    parser.add_argument("input", help="NIfTI/NRRD/MHA file, DICOM file or DICOM folder")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output folder (created if missing)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"bundle name or path (default {DEFAULT_MODEL})")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--batch", type=int, default=None, help="slices (2D) or windows (3D) per forward pass")
    parser.add_argument("--series", metavar="UID", help="SeriesInstanceUID to read from a DICOM folder")
    parser.add_argument("--no-postprocess", action="store_true", help="skip the bundle's post-processing")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def output_stem(path: Path) -> str:
    """File name without .nii/.nii.gz/... ; a folder's own name for DICOM folders."""
    name = path.resolve().name
    for suffix in (".gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".dicom", ".ima"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name or "volume"


def run(args: argparse.Namespace) -> int:
    from ..io import read_volume
    from ..models import load_model
    from ..pipeline import run_segmentation
    from .progress import ProgressBar

    volume = read_volume(args.input, series_uid=args.series)
    model = load_model(args.model, device="cpu")
    args.output.mkdir(parents=True, exist_ok=True)
    progress = None if args.quiet else ProgressBar("segment")
    outputs = run_segmentation(
        volume,
        model,
        args.output,
        output_stem(Path(args.input)),
        device=args.device,
        precision=args.precision,
        batch_size=args.batch,
        postprocessing=not args.no_postprocess,
        progress=progress,
    )
    for path in outputs.values():
        print(path)
    return 0
