"""Quantify: volume per class and per connected component (mL), the left/right asymmetry of
paired structures; a row click centres the view."""

from __future__ import annotations

from qtpy.QtWidgets import QAbstractItemView, QGroupBox, QTableWidget, QTableWidgetItem, QVBoxLayout

COLUMNS = ["class", "#", "volume (mL)", "L-R asymmetry (%)", "centroid z, y, x (mm)"]
MAX_ROWS_PER_CLASS = 20


class QuantifySection(QGroupBox):
    def __init__(self, panel) -> None:
        super().__init__("Quantify")
        self.panel = panel
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.setMinimumHeight(140)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        self.rows: list[dict] = []
        self.table.cellClicked.connect(self._on_row_clicked)

    def update_from_labels(self, labels, geometry, class_names) -> None:
        """Fill the table from a label volume (computes the components here)."""
        self.update_from_table(quantify_table(labels, geometry, class_names), class_names)

    def update_from_table(self, table: tuple[dict, list], class_names) -> None:
        """Fill the table: a total row per class, then its largest components."""
        from ...quantify import asymmetry_indices

        totals, components = table
        asymmetry = asymmetry_indices(totals)
        self.rows = []
        for name in class_names[1:]:
            mine = [row for row in components if row["class"] == name]
            self.rows.append({"class": name, "component": "all", "volume_ml": totals[name],
                              "centroid_mm_zyx": mine[0]["centroid_mm_zyx"] if mine else None})  # fmt: skip
            self.rows.extend(mine[:MAX_ROWS_PER_CLASS])
        self.table.setRowCount(len(self.rows))
        for r, row in enumerate(self.rows):
            centroid = row.get("centroid_mm_zyx")
            paired = row["class"].split(" ", 1)[-1] if row["class"].startswith(("left ", "right ")) else None
            index = asymmetry.get(paired) if row["component"] == "all" and paired else None
            values = [
                row["class"],
                str(row["component"]),
                f"{row['volume_ml']:.2f}",
                "" if index is None else f"{index:+.1f}",
                "" if centroid is None else ", ".join(f"{v:.1f}" for v in centroid),
            ]
            for c, value in enumerate(values):
                self.table.setItem(r, c, QTableWidgetItem(value))
        self.table.resizeColumnsToContents()

    def _on_row_clicked(self, row: int, column: int) -> None:
        self.centre_on(row)

    def centre_on(self, row: int) -> None:
        """Move the viewer's slice and camera to the row's centroid (world = physical mm)."""
        centroid = self.rows[row].get("centroid_mm_zyx")
        if centroid is None:
            return
        viewer = self.panel.viewer
        ndim = viewer.dims.ndim
        point = list(viewer.dims.point)
        point[ndim - 3 :] = centroid
        viewer.dims.point = point
        viewer.camera.center = tuple(centroid[-viewer.dims.ndisplay :]) if viewer.dims.ndisplay == 2 else tuple(centroid)


def quantify_table(labels, geometry, class_names) -> tuple[dict, list]:
    """(volumes per class in mL, component rows); slow on big volumes: run it in the job."""
    from ...quantify import class_volumes_ml, connected_components

    return class_volumes_ml(labels, geometry, class_names), connected_components(labels, geometry, class_names)
