"""Screenshots of the whole workflow, driven through the MedSeg panel with the shipped model.

    xvfb-run -a python scripts/workflow_screenshots.py [--volume PATH] [--out docs/screenshots]

The same steps as the end-to-end viewer test, with the default U-Net instead of a tiny
random one: open a scan through the plugin, segment, Grad-CAM for grey matter, MC-dropout
uncertainty, paint a correction and accept a slice, fine-tune 200 steps (a new version
in a throw-away model home), re-segment, quantify, export. One JPEG per stage
(``workflow_<n>_<stage>.jpg``); the README shows them. Default scan: the shipped sample "Adult head T1".
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WIDTH = 1200  # pixels of the saved screenshots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volume", type=Path, help="scan to open (default: the shipped sample head)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    parser.add_argument("--finetune-steps", type=int, default=200)
    args = parser.parse_args()
    os.environ["NAPARI_MEDSEG_HOME"] = tempfile.mkdtemp(prefix="medseg-screenshots-")  # versions go here

    import napari
    from PIL import Image
    from qtpy.QtCore import QEventLoop, QTimer
    from qtpy.QtWidgets import QApplication

    from napari_medseg.models import resolve_bundle
    from napari_medseg.resources import HEAD_SAMPLE, sample_volume_path

    args.out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True, title="napari-medseg")
    viewer.window._qt_window.resize(1600, 1000)
    volume_path = args.volume or sample_volume_path(HEAD_SAMPLE)
    (image,) = viewer.open(str(volume_path), plugin="napari-medseg")
    _, panel = viewer.window.add_plugin_dock_widget("napari-medseg", "Segmentation panel")
    panel.model_section.select_path(resolve_bundle("brain-tissue-unet"))
    panel.session.device = "cpu"

    def settle() -> None:
        for _ in range(5):
            QApplication.processEvents()
            time.sleep(0.05)

    def wait() -> None:
        loop, timer = QEventLoop(), QTimer()
        timer.timeout.connect(lambda: loop.quit() if not panel.jobs.busy else None)
        timer.start(50)
        loop.exec_()
        timer.stop()
        settle()

    def shot(name: str) -> None:
        settle()
        path = args.out / f"workflow_{name}.jpg"
        picture = Image.fromarray(viewer.screenshot(canvas_only=False, flash=False))
        picture = picture.resize((WIDTH, round(picture.height * WIDTH / picture.width)), Image.LANCZOS)
        picture.convert("RGB").save(path, quality=88, optimize=True)
        print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path.name}")

    def only(*names: str) -> None:
        for layer in viewer.layers:
            layer.visible = layer.name == image.name or any(layer.name.startswith(n) for n in names)

    middle = image.data.shape[0] // 2
    viewer.dims.set_point(0, float(image.data_to_world([middle, 0, 0])[0]))
    viewer.reset_view()
    shot("1_loaded")

    panel.segment_section.run()
    wait()
    shot("2_segmented")

    panel.explain_section.class_combo.setCurrentText("grey matter")
    panel.explain_section.run()
    wait()
    only(f"{image.name} Grad-CAM")
    shot("3_gradcam")

    panel.uncertainty_section.samples_spin.setValue(5)
    panel.uncertainty_section.run()
    wait()
    only(f"{image.name} total uncertainty")
    shot("4_uncertainty")

    only(f"{image.name} segmentation")
    corrections = panel.correct_section.create()
    data = corrections.data
    segmentation = viewer.layers[f"{image.name} segmentation"].data
    stroke = np.zeros_like(data, dtype=bool)
    rows = np.arange(data.shape[1] // 2 - 15, data.shape[1] // 2 + 15)
    stroke[middle, rows, data.shape[2] // 2 - 25] = True  # a short vertical stroke
    data[stroke & (segmentation > 0)] = segmentation[stroke & (segmentation > 0)] + 1  # label = class + 1
    corrections.data = data
    panel.correct_section.accept_current_slice()
    only(f"{image.name} corrections")
    shot("5_corrections")

    panel.finetune_section.steps_spin.setValue(args.finetune_steps)
    panel.finetune_section.run()
    wait()
    panel.finetune_section.resegment_button.click()
    wait()
    only(f"{image.name} segmentation")
    panel.quantify_section.centre_on(0)
    shot("6_finetuned_resegmented")

    export_dir = Path(tempfile.mkdtemp(prefix="medseg-export-"))
    panel.export_section.folder_edit.setText(str(export_dir))
    written = panel.export_section.export()
    print(f"exported {len(written)} files")
    viewer.close()


if __name__ == "__main__":
    main()
