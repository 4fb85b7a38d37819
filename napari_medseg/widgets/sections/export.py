"""Export: every result layer of the image with the source geometry, plus the report JSON.

The files are written as one set through :class:`~napari_medseg.export.result_set.ResultSet`, as
``medseg segment`` writes its outputs: the folder is locked, the files are staged and moved
in together (the report last), and a failure keeps nothing of the export. Files an earlier
export of the same layers left are replaced only when the user says so.
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QWidget,
)

logger = logging.getLogger(__name__)
FORMATS = [".nii.gz", ".nrrd", ".mha"]

# (file name, writer called with the staged path) of one exported file
ExportFile = tuple[str, Callable[[Path], Any]]


class ExportSection(QGroupBox):
    def __init__(self, panel) -> None:
        super().__init__("Export")
        self.panel = panel
        self.folder_edit = QLineEdit(str(Path.cwd() / "medseg-export"))
        self.browse_button = QPushButton("…")
        self.format_combo = QComboBox()
        self.format_combo.addItems(FORMATS)
        self.export_button = QPushButton("Export results")
        row = QHBoxLayout()
        row.addWidget(self.folder_edit, 1)
        row.addWidget(self.browse_button)
        holder = QWidget()
        holder.setLayout(row)
        form = QFormLayout(self)
        form.addRow("Folder", holder)
        form.addRow("Format", self.format_combo)
        form.addRow(self.export_button)
        self.browse_button.clicked.connect(self._on_browse_clicked)
        self.export_button.clicked.connect(self._on_export_clicked)

    def _on_browse_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export folder", self.folder_edit.text())
        if folder:
            self.folder_edit.setText(folder)

    def _on_export_clicked(self) -> None:
        self.export()

    def export(self) -> list[Path]:
        """Write the selected image's result layers as one set; returns the written paths
        ([] when nothing was written: no image, no results, the user kept earlier files,
        or an error, each shown as a notification)."""
        from napari.utils.notifications import show_error, show_info

        image = self.panel.selected_image()
        if image is None:
            show_error("Choose an image layer to export its results.")
            return []
        folder = Path(self.folder_edit.text())
        try:
            files = export_files(self.panel, image, self.format_combo.currentText())
            if not files:
                show_info(f"{image.name} has no results to export yet: segment it first.")
                return []
            family = export_family([name for name, _ in files])
            overwrite = False
            existing = existing_files(folder, family)
            if existing:
                if not ask_replace(self, existing):
                    show_info(f"Export cancelled: {_listed(existing)} kept as it was.")
                    return []
                overwrite = True
            written = write_files(folder, files, family, overwrite=overwrite)
        except (OSError, ValueError) as exc:  # the result set's errors name the file
            show_error(f"Export failed: {exc}")
            return []
        show_info(f"Exported {len(written)} files to {folder}")
        return written


def ask_replace(parent: QWidget | None, existing: Sequence[Path]) -> bool:
    """Ask whether an export may replace ``existing`` files (Replace / Cancel, Cancel the
    default); True for Replace."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Warning)
    box.setWindowTitle("Replace exported files?")
    more = f" and {len(existing) - 1} more files" if len(existing) > 1 else ""
    box.setText(f"{existing[0].name}{more} already in {existing[0].parent}.")
    box.setInformativeText("Replace them with this export? Cancel keeps them and writes nothing.")
    replace = box.addButton("Replace", QMessageBox.DestructiveRole)
    box.addButton(QMessageBox.Cancel)
    box.setDefaultButton(QMessageBox.Cancel)
    box.exec_()
    return box.clickedButton() is replace


def export_files(panel, image, suffix: str) -> list[ExportFile]:
    """What the export of ``image``'s results writes, the report last: labels as
    uint8/uint16 (a segmentation with the bundle's label values), maps as float32, all
    on the image's exact grid; a DICOM SEG of each segmentation when the image came from
    DICOM; the report JSON when the image was segmented. Reads the
    layers now (GUI thread); the writers only write."""
    from napari.layers import Image, Labels

    import numpy as np

    from ...contributions.layers import from_layer_layout, volume_from_layer
    from ...io import write_volume
    from ...export.report import build_report, write_json

    source = volume_from_layer(image)
    model = panel.session.model
    files: list[ExportFile] = []
    for layer in panel.viewer.layers:
        if layer is image or layer.metadata.get("medseg", {}).get("image_layer") != image.name:
            continue
        if not isinstance(layer, (Labels, Image)):
            continue
        data = np.ascontiguousarray(from_layer_layout(np.asarray(layer.data), layer.metadata))
        if data.shape[-3:] != source.shape:
            continue
        kind = "labels" if isinstance(layer, Labels) else "image"
        if kind == "labels" and model is not None and _is_segmentation_of(layer, model.config):
            files += _dicom_seg_file(f"{file_stem(layer.name)}_seg.dcm", data, source, image.metadata.get("medseg", {}), model)
            data = model.config.encode_labels(data)  # the bundle's label values, as `medseg segment` writes
        files.append((f"{file_stem(layer.name)}{suffix}", _volume_writer(write_volume, data, source, kind)))
    result = panel.session.segmentations.get(image.name)
    if files and result is not None and model is not None:
        report = build_report(source, result, model, panel.session.reports.get(image.name))
        report["outputs"] = [name for name, _ in files]
        files.append((f"{file_stem(image.name)}_report.json", lambda path: write_json(path, report)))
    return files


def export_family(names: Sequence[str]) -> list[str]:
    """Glob patterns (exact names) of the files an earlier export of the same layers may
    have left: each volume in every format, and the other names as they are."""
    family = []
    for name in names:
        suffix = next((s for s in FORMATS if name.endswith(s)), None)
        variants = [name[: -len(suffix)] + other for other in FORMATS] if suffix else [name]
        family += [glob.escape(variant) for variant in variants]
    return family


def existing_files(folder: Path, family: Sequence[str]) -> list[Path]:
    """The files of ``family`` already in ``folder``, sorted."""
    from ...export.result_set import ResultSet

    return ResultSet(folder, family).existing()


def write_files(folder: Path, files: Sequence[ExportFile], family: Sequence[str], *, overwrite: bool) -> list[Path]:
    """Write ``files`` into ``folder`` as one set, the last one last; returns their paths.

    Raises:
        ResultsExistError: a file of ``family`` exists and ``overwrite`` is False.
        FolderLockedError: another export or ``medseg segment`` is writing into ``folder``.
        ResultSetError: a file could not be written (named); nothing of this export is kept.
    """
    from ...export.result_set import ResultSet

    with ResultSet(folder, family, overwrite=overwrite) as results:
        for name, writer in files:
            results.write(name, writer)
        written = results.commit(last=files[-1][0])
    return [written[name] for name, _ in files]


def file_stem(name: str) -> str:
    """A layer name as it appears in exported file names: other characters than letters,
    digits and ``-_()`` become ``_``."""
    return "".join(ch if ch.isalnum() or ch in "-_()" else "_" for ch in name)


def _dicom_seg_file(name: str, labels, source, source_meta: dict, model) -> list[ExportFile]:
    """The DICOM SEG of a segmentation when the scan (described by ``source_meta``, the
    image layer's ``medseg`` metadata) came from DICOM and its headers allow one; [] otherwise
    (logged when a DICOM scan cannot have one)."""
    from ...io.dicom_seg import dicom_seg_problem
    from ...export.run import write_model_dicom_seg

    problem = dicom_seg_problem(source_meta)
    if problem is not None:
        if source_meta.get("format") == "dicom":
            logger.warning("%s: no DICOM SEG written: %s", name, problem)
        return []
    return [(name, lambda path: write_model_dicom_seg(path, labels, source, model, source_meta))]


def _volume_writer(write_volume, data, source, kind: str) -> Callable[[Path], Any]:
    return lambda path: write_volume(path, data, source, kind=kind)


def _listed(paths: Sequence[Path]) -> str:
    """'a.nii.gz' or 'a.nii.gz and 2 more files'."""
    more = f" and {len(paths) - 1} more files" if len(paths) > 1 else ""
    return f"{paths[0]}{more}"


def _is_segmentation_of(layer, config) -> bool:
    """A segmentation layer (class indices) of ``config``'s classes, not a corrections layer."""
    medseg = layer.metadata.get("medseg", {})
    return not medseg.get("corrections") and list(medseg.get("class_names", [])) == list(config.class_names)
