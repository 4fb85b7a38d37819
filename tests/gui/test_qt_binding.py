"""The viewer runs on the Qt binding the run asked for (PyQt6 by default, PyQt5 in the Qt 5 run)."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.gui


def test_napari_and_pytest_qt_share_the_chosen_binding(make_napari_viewer):
    import qtpy
    from pytestqt.qt_compat import qt_api

    make_napari_viewer(show=True)
    chosen = os.environ["QT_API"]  # set by tests/conftest.py, from PYTEST_QT_API or the default
    assert qtpy.API_NAME.lower() == chosen
    assert qt_api.pytest_qt_api == chosen
