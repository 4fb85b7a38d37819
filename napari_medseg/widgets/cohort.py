"""Open cohort: a ``medseg batch`` table in a dock; a row click opens that case as layers.

Thin: the table comes from :func:`napari_medseg.batch.table.read_table`, the layers from
:func:`napari_medseg.batch.review.case_layers` (read on a worker thread); this widget only
shows them.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

logger = logging.getLogger(__name__)

# The columns shown (others stay in the file); volumes are added from the table.
SHOWN = ["case_id", "status", "flagged", "flags", "ood_score", "error", "seconds"]


class CohortWidget(QWidget):
    """Dock widget: "Open cohort..." loads ``cohort.csv``; clicking a row opens the case."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.folder: Path | None = None
        self.rows: list[dict[str, Any]] = []
        self.open_button = QPushButton("Open cohort...")
        self.status = QLabel("No cohort open: choose a medseg batch output folder or its cohort.csv.")
        self.status.setWordWrap(True)
        self.table = QTableWidget(0, 0)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSortingEnabled(False)  # row i of the widget is self.rows[i]
        layout = QVBoxLayout(self)
        for widget in (self.open_button, self.status, self.table):
            layout.addWidget(widget)
        self.open_button.clicked.connect(self._on_open_clicked)
        self.table.cellClicked.connect(self._on_row_clicked)

    def _on_open_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open cohort table", "", "Cohort table (cohort.csv)")
        if path:
            self.load(path)

    def load(self, path: str | Path) -> None:
        """Show the cohort table at ``path`` (``cohort.csv`` or its folder), flagged cases first."""
        from ..batch.table import read_table

        table = read_table(path)
        self.folder = Path(path) if Path(path).is_dir() else Path(path).parent
        table = table.sort_values(["flagged", "case_id"], ascending=[False, True], kind="stable")
        self.rows = table.to_dict("records")
        columns = [c for c in SHOWN if c in table.columns] + [c for c in table.columns if c.startswith("vol_")]
        self.table.setColumnCount(len(columns))
        self.table.setHorizontalHeaderLabels(columns)
        self.table.setRowCount(len(self.rows))
        for r, row in enumerate(self.rows):
            for c, column in enumerate(columns):
                self.table.setItem(r, c, QTableWidgetItem(_cell(row.get(column))))
        failed = sum(row.get("status") == "failed" for row in self.rows)
        flagged = sum(bool(row.get("flagged")) for row in self.rows)
        self.status.setText(f"{self.folder}: {len(self.rows)} cases, {flagged} flagged, {failed} failed. Click a row to open it.")

    def _on_row_clicked(self, row: int, _column: int) -> None:
        from napari.qt.threading import create_worker

        from ..batch.review import case_layers

        case = self.rows[row]
        self.status.setText(f"opening {case['case_id']}...")
        worker = create_worker(case_layers, self.folder, case)  # reads files: off the GUI thread
        worker.returned.connect(self._on_case_loaded)
        worker.errored.connect(self._on_case_failed)
        worker.start()

    def _on_case_loaded(self, layers: list) -> None:
        """Add (or replace) the case's layers; runs on the GUI thread."""
        from .layers import map_colormap, show_colorbar

        for data, kwargs, kind in layers:
            name = kwargs["name"]
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
            layer = getattr(self.viewer, f"add_{kind}")(data, **kwargs)  # add_image / add_labels
            map_kind = kwargs.get("metadata", {}).get("medseg", {}).get("map_kind")
            if map_kind:  # low values transparent over the scan, with a colour bar, as in the panel
                layer.colormap = map_colormap(map_kind)
                show_colorbar(layer)
        self.status.setText(f"opened {layers[0][1]['name']}: {len(layers)} layers")

    def _on_case_failed(self, error: Exception) -> None:
        from napari.utils.notifications import show_error

        self.status.setText(f"could not open the case: {error}")
        show_error(f"Open cohort: {error}")


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
