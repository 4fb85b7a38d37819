"""Start-up imports run on a background thread and skip what is not installed."""

from __future__ import annotations

import sys

from napari_medseg.widgets.warmup import start_warmup, warm_imports


def test_warm_imports_imports_and_skips_missing_modules():
    sys.modules.pop("colorsys", None)
    warm_imports(("colorsys", "no_such_module_for_medseg"))
    assert "colorsys" in sys.modules and "no_such_module_for_medseg" not in sys.modules


def test_warmup_thread_finishes_with_the_lazy_imports():
    thread = start_warmup()
    thread.join(timeout=120)
    assert not thread.is_alive() and thread.daemon
    assert "pandas" in sys.modules and "torch._dynamo" in sys.modules
