"""``make demo``: the sample brain segmented by the default model, in napari.

With a display, napari opens with the sample brain and the MedSeg panel docked, then
segments it and estimates its uncertainty in the background. With ``--headless`` (used
under Xvfb when there is no display) the same pipeline runs through the core, the
outputs (labels, probabilities, uncertainty, Grad-CAM, report) go to the output folder,
the viewer shows them, and screenshots plus a summary are written before exiting.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "brain-tissue-unet"


def build_viewer(show: bool):
    """A viewer with the sample brain and the MedSeg panel docked (default model selected)."""
    import napari

    viewer = napari.Viewer(show=show, title="napari-medseg demo")
    viewer.open_sample("napari-medseg", "brain_t1")
    _, panel = viewer.window.add_plugin_dock_widget("napari-medseg", "MedSeg")
    from ..models import resolve_bundle

    panel.model_section.select_path(resolve_bundle(DEFAULT_MODEL))
    return viewer, panel


def run_headless(out: Path) -> dict:
    """Segment the sample headlessly, show the results in a viewer, save screenshots."""
    import imageio.v3 as iio
    from qtpy.QtWidgets import QApplication

    from ..io import read_volume
    from ..models import load_model
    from ..pipeline import run_segmentation
    from ..resources import sample_volume_path
    from .layers import show_map, show_segmentation

    out.mkdir(parents=True, exist_ok=True)
    volume = read_volume(sample_volume_path())
    model = load_model(DEFAULT_MODEL)
    paths = run_segmentation(volume, model, out, "sample", uncertainty="mc-dropout", samples=5, gradcam=["grey matter"], overwrite=True)
    report = json.loads(paths["report"].read_text())

    viewer, panel = build_viewer(show=True)
    try:
        image = viewer.layers["MNI152 T1"]
        show_segmentation(viewer, image, read_volume(paths["seg"]).array, model.config)
        show_map(viewer, image, read_volume(paths["entropy"]).array, "MNI152 T1 total uncertainty [mc-dropout]",
                 colormap="viridis", blending="additive")  # fmt: skip
        viewer.layers["MNI152 T1 total uncertainty [mc-dropout]"].visible = False
        viewer.window._qt_window.resize(1500, 950)
        QApplication.processEvents()
        viewer.reset_view()
        QApplication.processEvents()
        iio.imwrite(out / "viewer_segmentation.png", viewer.screenshot(canvas_only=False, flash=False))
        viewer.layers["MNI152 T1 total uncertainty [mc-dropout]"].visible = True
        viewer.layers["MNI152 T1 segmentation"].visible = False
        iio.imwrite(out / "viewer_uncertainty.png", viewer.screenshot(canvas_only=True, flash=False))
    finally:
        viewer.close()
    summary = {
        "model": report["model"]["name"],
        "volume_ml": report["volume_ml"],
        "ood": report["ood"],
        "timings_s": report["timings_s"],
        "outputs": sorted(p.name for p in out.iterdir()),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--headless", action="store_true", help="write outputs and exit instead of opening a window")
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder for --headless")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
    logger.setLevel(logging.INFO)
    if args.headless:
        summary = run_headless(args.out)
        logger.info("%s", json.dumps(summary, indent=2))
        logger.info("outputs, report and screenshots written to %s/", args.out)
        return 0
    import napari

    _, panel = build_viewer(show=True)
    worker = panel.segment_section.run()
    if worker is not None:
        worker.finished.connect(panel.uncertainty_section.run)
    napari.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
