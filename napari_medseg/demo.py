"""``make demo``: the sample brain in napari with the MedSeg panel.

With a display, napari opens and stays open. With ``--headless`` (used under Xvfb when
there is no display) the same viewer is built, screenshots and a summary are written
to the output folder, and the process exits.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def build_viewer(show: bool):
    """A viewer with the sample brain and the MedSeg panel docked."""
    import napari

    viewer = napari.Viewer(show=show, title="napari-medseg demo")
    viewer.open_sample("napari-medseg", "brain_t1")
    _, panel = viewer.window.add_plugin_dock_widget("napari-medseg", "MedSeg")
    return viewer, panel


def run_headless(out: Path) -> dict:
    """Build the viewer under a virtual display and record what it shows."""
    import imageio.v3 as iio

    from .info import describe
    from .io import read_volume
    from .resources import sample_volume_path

    out.mkdir(parents=True, exist_ok=True)
    viewer, panel = build_viewer(show=True)
    try:
        from qtpy.QtWidgets import QApplication

        viewer.window._qt_window.resize(1500, 950)
        QApplication.processEvents()
        viewer.reset_view()
        QApplication.processEvents()
        canvas = viewer.screenshot(canvas_only=True, flash=False)
        window = viewer.screenshot(canvas_only=False, flash=False)
        iio.imwrite(out / "viewer_canvas.png", canvas)
        iio.imwrite(out / "viewer_window.png", window)
        summary = {
            "sample": describe(read_volume(sample_volume_path())),
            "panel_text": panel.info_text.toPlainText(),
            "screenshots": ["viewer_canvas.png", "viewer_window.png"],
        }
    finally:
        viewer.close()
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--headless", action="store_true", help="write outputs and exit instead of opening a window")
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder for --headless")
    args = parser.parse_args(argv)
    if args.headless:
        summary = run_headless(args.out)
        print(summary["panel_text"])
        print(f"\nscreenshots and summary written to {args.out}/")
        return 0
    import napari

    build_viewer(show=True)
    napari.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
