"""``make demo``: the sample head segmented by the default model, in napari.

The input is the shipped sample "Adult head T1", a real adult head (skull and scalp, 1 mm)
that the model never saw in training (see ``resources/sample/NOTICE.md``).

With a display, napari opens with the sample head and the MedSeg panel docked, then
segments it and estimates its uncertainty in the background. With ``--headless`` (used
under Xvfb when there is no display) the same pipeline runs through the core, the
outputs (labels, probabilities, uncertainty, Grad-CAM, summary figure, report) go to the output folder,
the viewer shows them, and screenshots plus a summary are written before exiting.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

from napari_medseg.resources import DEFAULT_MODEL, HEAD_SAMPLE

logger = logging.getLogger(__name__)

SAMPLE_KEY = HEAD_SAMPLE  # the napari sample key and the resources key
PANEL_NAME = "Segmentation panel"


def build_viewer(show: bool):
    """A viewer with the sample head and the MedSeg panel docked (default model selected)."""
    import napari

    viewer = napari.Viewer(show=show, title="napari-medseg demo")
    return viewer, set_up(viewer)


def set_up(viewer):
    """Open the sample head in ``viewer`` and dock the panel with the default model; returns the panel."""
    from napari_medseg.models import resolve_bundle

    viewer.open_sample("napari-medseg", SAMPLE_KEY)
    _, panel = viewer.window.add_plugin_dock_widget("napari-medseg", PANEL_NAME)
    panel.model_section.select_path(resolve_bundle(DEFAULT_MODEL))
    return panel


def run_headless(out: Path) -> dict:
    """Segment the sample headlessly, show the results in a viewer, save screenshots."""
    import imageio.v3 as iio
    from qtpy.QtWidgets import QApplication

    from napari_medseg._sample_data import HEAD_LAYER
    from napari_medseg.export.run import run_segmentation
    from napari_medseg.io import read_volume
    from napari_medseg.models import load_model
    from napari_medseg.resources import sample_volume_path
    from napari_medseg.widgets.layers import show_map, show_segmentation

    out.mkdir(parents=True, exist_ok=True)
    volume = replace(read_volume(sample_volume_path(SAMPLE_KEY)), modality="MR")
    model = load_model(DEFAULT_MODEL)
    paths = run_segmentation(volume, model, out, "sample", uncertainty="mc-dropout", samples=5, gradcam=["grey matter"], figure=True, overwrite=True)
    report = json.loads(paths["report"].read_text())

    viewer, panel = build_viewer(show=True)
    try:
        image = viewer.layers[HEAD_LAYER]
        uncertainty = f"{HEAD_LAYER} total uncertainty [mc-dropout]"
        show_segmentation(viewer, image, read_volume(paths["seg"]).array, model.config)
        show_map(viewer, image, read_volume(paths["entropy"]).array, uncertainty, kind="uncertainty")
        viewer.layers[uncertainty].visible = False
        viewer.window._qt_window.resize(1500, 950)
        QApplication.processEvents()
        viewer.reset_view()
        QApplication.processEvents()
        iio.imwrite(out / "viewer_segmentation.png", viewer.screenshot(canvas_only=False, flash=False))
        viewer.layers[uncertainty].visible = True
        viewer.layers[f"{HEAD_LAYER} segmentation"].visible = False
        iio.imwrite(out / "viewer_uncertainty.png", viewer.screenshot(canvas_only=True, flash=False))
    finally:
        viewer.close()
    summary = {
        "input": sample_volume_path(SAMPLE_KEY).name,
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
