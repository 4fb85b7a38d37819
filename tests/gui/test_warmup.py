"""Start-up imports: pure-Python ones on a background thread, torch's on the GUI thread."""

from __future__ import annotations

import importlib
import sys
import threading

import pytest

from napari_medseg.widgets import warmup
from napari_medseg.widgets.warmup import start_warmup, warm_imports


def test_warm_imports_imports_and_skips_missing_modules():
    sys.modules.pop("colorsys", None)
    warm_imports(("colorsys", "no_such_module_for_medseg"))
    assert "colorsys" in sys.modules and "no_such_module_for_medseg" not in sys.modules


def test_warmup_thread_finishes_with_the_lazy_imports():
    thread = start_warmup()
    thread.join(timeout=120)
    assert not thread.is_alive() and thread.daemon
    assert "pandas" in sys.modules


@pytest.mark.parametrize("name", ["torch", "torch._dynamo", "torch.cuda"])
def test_torch_modules_are_refused_on_a_warmup_thread(name):
    with pytest.raises(ValueError, match="thread that uses torch"):
        start_warmup((name,))


def test_panel_imports_torch_modules_on_the_gui_thread(make_napari_viewer, qtbot, monkeypatch):
    from napari_medseg.widgets.panel import MedSegPanel

    threads: dict[str, str] = {}
    real_import = importlib.import_module

    def recording_import(name, *args, **kwargs):
        threads[name] = threading.current_thread().name
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(warmup.importlib, "import_module", recording_import)
    panel = MedSegPanel(make_napari_viewer())
    panel.warmup.join(timeout=120)
    qtbot.waitUntil(lambda: "torch._dynamo" in threads, timeout=30000)
    assert threads["torch._dynamo"] == threading.main_thread().name
    assert threads["pandas"] == "napari-medseg-warmup"
