"""The headless jobs behind ``medseg segment`` (and the panel's export): run and write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .inference import segment
from .inference.control import ProgressCallback, StopCheck
from .io import write_volume
from .report import build_report, write_json
from .types import Volume


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
    progress: ProgressCallback = None,
    should_stop: StopCheck = None,
) -> dict[str, Path]:
    """Segment ``volume`` and write ``<stem>_seg.nii.gz``, ``<stem>_prob.nii.gz`` and
    ``<stem>_report.json`` into ``output_dir`` with the input's geometry.

    Returns:
        {"seg": path, "prob": path, "report": path}.
    """
    output_dir = Path(output_dir)
    result = segment(
        volume, model, device=device, precision=precision, batch_size=batch_size,
        postprocessing=postprocessing, progress=progress, should_stop=should_stop,
    )  # fmt: skip
    paths = {
        "seg": write_volume(output_dir / f"{stem}_seg.nii.gz", result.labels, volume, kind="labels"),
        "prob": write_volume(output_dir / f"{stem}_prob.nii.gz", result.probabilities, volume, kind="image"),
    }
    report = build_report(volume, result, model)
    report["outputs"] = {key: path.name for key, path in paths.items()}
    paths["report"] = write_json(output_dir / f"{stem}_report.json", report)
    return paths
