"""``medseg finetune``: fine-tune a bundle on sparse labels and write a new version.

Works alone or under ``torchrun`` (see :mod:`napari_medseg.training.distributed`): every
process trains, rank 0 alone prints and writes the bundle.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from ..training.options import DEFAULT_STEPS, STROKE_LOSSES
from ..types import GRID_TOLERANCE

logger = logging.getLogger(__name__)



def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a model on sparse labels; writes a new bundle (the parent is never modified)",
        description=(
            "Fine-tune a model bundle on sparse corrections. SPARSE uses 0 for 'not annotated' and "
            "k+1 for class k (so background can be painted as 1); values above the model's classes "
            "need --new-class names. Ctrl-C once stops after the current step and still saves."
        ),
    )
    parser.add_argument("--image", action="append", required=True, type=Path, help="image file (repeat for several)")
    parser.add_argument("--labels", action="append", required=True, type=Path, help="sparse label file on the image's grid, one per --image")
    parser.add_argument("--model", required=True, help="parent bundle name or path")
    parser.add_argument("-o", "--output", type=Path, help="new bundle folder (default: the user models folder)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=4, help="windows per step (per process)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--new-class", action="append", default=[], metavar="NAME", help="name of label value K+1, K+2, ... (repeat)")
    parser.add_argument("--forgetting", default="distill", choices=["distill", "l2sp", "distill+l2sp", "none"])
    parser.add_argument("--distill-weight", type=float, default=1.0)
    parser.add_argument(
        "--distill-target", default="segmentation", choices=["segmentation", "network"],
        help="keep, away from the strokes, the parent's segmentation with its post-processing (what was "
        "corrected; default) or its network's output",
    )  # fmt: skip
    parser.add_argument(
        "--reference", action="append", default=[], type=Path, metavar="SEG",
        help="the segmentation that was corrected, one per --image (default: the parent's own segmentation)",
    )  # fmt: skip
    parser.add_argument(
        "--refine", action="store_true",
        help="keep toward the parent's segmentation refined with the scan's intensities (medseg segment --refine), "
        "when that is what was corrected",
    )  # fmt: skip
    parser.add_argument("--l2sp-weight", type=float, default=0.01)
    parser.add_argument("--stroke-loss", default="ce", choices=list(STROKE_LOSSES),
                        help="loss on the painted voxels: cross-entropy (default) or with a soft Dice term")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-save-on-stop", action="store_true", help="write nothing when stopped early")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def read_pairs(images: list[Path], labels: list[Path], option: str = "--labels"):
    """Read image/label pairs, checking each label volume lies on its image's grid.

    Raises:
        ValueError: unequal counts, or a label volume whose shape or geometry differs from
            its image's (:meth:`~napari_medseg.types.Geometry.differences`).
    """
    from ..io import read_volume

    if len(images) != len(labels):
        raise ValueError(f"{len(images)} --image but {len(labels)} {option}: give one {option} per --image")
    volumes, sparse = [], []
    for image_path, label_path in zip(images, labels):
        image = read_volume(image_path)
        label = read_volume(label_path)
        if label.shape != image.shape:
            raise ValueError(f"labels {label_path} have shape {label.shape}, image {image_path} has {image.shape}: not on the same grid")
        problems = label.geometry.differences(image.geometry)
        if problems:
            raise ValueError(
                f"labels {label_path} and image {image_path} are not on the same grid "
                f"(tolerance {GRID_TOLERANCE:g}): {'; '.join(problems)}"
            )
        if label.array.ndim != 3:
            raise ValueError(f"labels {label_path} must be one label volume (z, y, x), not shape {label.array.shape}")
        volumes.append(image)
        sparse.append(label.array)
    return volumes, sparse


def run(args: argparse.Namespace) -> int:
    from ..models import load_model
    from ..training import distributed
    from ..training.finetune import FinetuneOptions, require_annotations, run_finetune
    from ..training.versions import default_version_path, reserve_version, save_result
    from .progress import ProgressBar

    # Every check comes before the parent segments a scan or a step is trained.
    with distributed.session(args.device) as context, ExitStack() as held:
        main = context is None or context.is_main
        options = FinetuneOptions(
            steps=args.steps, lr=args.lr, batch_size=args.batch, new_classes=args.new_class, device=args.device,
            precision=args.precision, forgetting=args.forgetting, distill_weight=args.distill_weight,
            l2sp_weight=args.l2sp_weight, distill_target=args.distill_target, refine=args.refine, stroke_loss=args.stroke_loss,
            seed=args.seed,
        )  # fmt: skip
        volumes, sparse = read_pairs(args.image, args.labels)
        require_annotations(sparse, args.labels)
        parent = load_model(args.model, device="cpu")
        out = None
        if main:  # rank 0 alone writes: it holds the new bundle's folder for the whole run
            out = held.enter_context(reserve_version(args.output or default_version_path(parent), parent))
        references = None
        if args.reference:  # written segmentations carry the bundle's label values
            references = [parent.config.decode_labels(r) for r in read_pairs(args.image, args.reference, "--reference")[1]]
        bar = ProgressBar("finetune") if main and not args.quiet else None
        stop = _StopFlag()
        with stop.on_interrupt():
            result = run_finetune(
                parent, volumes, sparse, options, references=references, should_stop=stop,
                progress=None if bar is None else (lambda record: bar(record.step, record.total)),
            )  # fmt: skip
        path = None
        if main:
            path = save_result(result, parent, out=out, save_on_stop=not args.no_save_on_stop)
            _summary(result, parent, path)
    return 0


def _summary(result, parent, path) -> None:
    out = sys.stdout
    name = getattr(parent, "bundle_path", None)
    state = "stopped early" if result.stopped else "done"
    out.write(f"fine-tuned {Path(name).name if name else 'model'}: {result.steps_done}/{result.settings['steps_requested']} steps ({state}) in {result.seconds:.1f} s\n")
    if result.losses:
        out.write(f"loss: {result.losses[0]:.4f} -> {result.losses[-1]:.4f}\n")
    counts = ", ".join(f"{k} {v}" for k, v in result.annotated_counts.items() if v)
    out.write(f"annotated voxels: {counts}\n")
    before, after = result.metrics_before, result.metrics_after
    out.write(f"accuracy on annotated voxels: {before['accuracy']:.3f} -> {after['accuracy']:.3f}\n")
    for cls, value in after["dice"].items():
        out.write(f"  Dice {cls}: {before['dice'].get(cls, 0.0):.3f} -> {value:.3f}\n")
    note = result.settings.get("postprocess_note")
    if note:
        out.write(f"post-processing: {note}\n")
    out.write(f"bundle: {path}\n" if path else "bundle: none written (stopped, --no-save-on-stop)\n")
    out.flush()


class _StopFlag:
    """``should_stop`` for the engine; the first Ctrl-C sets it, the second interrupts."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("medseg finetune: stopping after this step (Ctrl-C again to abort)", file=sys.stderr)

    @contextmanager
    def on_interrupt(self) -> Iterator[None]:
        """Route SIGINT to this flag meanwhile (main thread only; restored on exit)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
