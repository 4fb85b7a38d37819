"""``medseg`` entry point: argument parsing and error reporting shared by all commands."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from . import batch as batch_command
from . import evaluate as evaluate_command
from . import finetune as finetune_command
from . import info as info_command
from . import models as models_command
from . import segment as segment_command

# Each command module offers add_parser(subparsers) and run(args) -> int.
COMMANDS = [info_command, segment_command, models_command, evaluate_command, finetune_command, batch_command]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medseg",
        description="Segment, explain, fine-tune and quantify medical volumes (napari-medseg).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code (0 on success)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("medseg: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI reports every failure the same way
        from ..control import Cancelled

        if isinstance(exc, Cancelled):
            print(f"medseg {args.command}: cancelled", file=sys.stderr)
            return 130
        if isinstance(exc, MemoryError):  # an allocation no check foresaw: still a clear exit 2
            detail = f" ({exc})" if str(exc) else ""
            print(f"medseg {args.command}: error: out of memory{detail}; the input or the model is too large for "
                  "this machine", file=sys.stderr)  # fmt: skip
            return 2
        if not isinstance(exc, (ValueError, FileNotFoundError, OSError)):
            raise
        print(f"medseg {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
