"""``medseg info PATH``: what was read, and what looks wrong with it."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "info",
        help="print size, geometry, modality, intensities and warnings of a volume",
        description="Read a file or DICOM folder and print what was read.",
    )
    parser.add_argument("path", help="NIfTI/NRRD/MHA file, DICOM file or DICOM folder")
    parser.add_argument("--series", metavar="UID", help="SeriesInstanceUID to read from a DICOM folder")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..io.describe import describe, format_description
    from ..io import read_volume

    volume = read_volume(args.path, series_uid=args.series)
    summary = describe(volume)
    print(json.dumps(summary, indent=2) if args.json else format_description(summary))
    return 0
