"""Open cohort in a real viewer: the table loads flagged cases first; a row opens the case's layers."""

from __future__ import annotations

import pytest

from napari_medseg.batch.review import case_layers
from tests.batch.test_case_and_review import finished_case  # noqa: F401 - fixture

pytestmark = pytest.mark.gui


def test_open_cohort_and_a_case(make_napari_viewer, qtbot, finished_case):  # noqa: F811
    from napari_medseg.widgets.cohort import CohortWidget

    out, case, _, _ = finished_case
    viewer = make_napari_viewer(show=True)
    widget = CohortWidget(viewer)
    qtbot.addWidget(widget)
    widget.load(out / "cohort.csv")
    assert widget.table.rowCount() == 2
    assert widget.table.item(0, 0).text() == "missing" and widget.table.item(0, 1).text() == "failed"
    assert "2 cases, 1 flagged, 1 failed" in widget.status.text()

    widget._on_case_loaded(case_layers(out, widget.rows[1]))  # what the row click's worker returns
    assert [layer.name for layer in viewer.layers] == ["case0", "case0 segmentation"]
    scan, labels = viewer.layers
    assert labels.data.shape == scan.data.shape and tuple(labels.scale) == tuple(scan.scale)
    widget._on_case_loaded(case_layers(out, widget.rows[1]))  # opening it again replaces, never duplicates
    assert len(viewer.layers) == 2
