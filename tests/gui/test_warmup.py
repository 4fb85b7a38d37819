"""Start-up imports: pure-Python ones on a background thread, torch's on the GUI thread."""

from __future__ import annotations

import importlib
import logging
import subprocess
import sys
import textwrap
import threading

import pytest

from napari_medseg.widgets import warmup
from napari_medseg.widgets.warmup import keep_triton_out, start_warmup, warm_imports

# A stand-in triton package (the CPU build of torch brings none): importing it leaves a
# marker, so a test sees whether anything loaded it.
FAKE_TRITON = """
import os, pathlib
pathlib.Path(os.environ["TRITON_MARKER"]).write_text("imported")
__version__ = "0.0.0"
"""


def _run(tmp_path, code: str) -> subprocess.CompletedProcess:
    package = tmp_path / "site" / "triton"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(FAKE_TRITON)
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(tmp_path / "site"),
        "TRITON_MARKER": str(tmp_path / "marker"),
    }
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=300
    )


def test_warm_imports_imports_and_skips_missing_modules():
    sys.modules.pop("colorsys", None)
    warm_imports(("colorsys", "no_such_module_for_medseg"))
    assert "colorsys" in sys.modules and "no_such_module_for_medseg" not in sys.modules


def test_warmup_thread_finishes_with_the_lazy_imports():
    """In a fresh process, where nothing imported them before: the thread brings them in."""
    code = textwrap.dedent(
        """
        import sys
        from napari_medseg.widgets.warmup import LAZY_IMPORTS, start_warmup
        before = [name for name in LAZY_IMPORTS if name in sys.modules]
        thread = start_warmup()
        thread.join(timeout=120)
        print(before, not thread.is_alive() and thread.daemon, [name in sys.modules for name in LAZY_IMPORTS])
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.split("\n")[-2] == "[] True [True]", out.stdout + out.stderr


@pytest.mark.parametrize("name", ["torch", "torch._dynamo", "torch.cuda"])
def test_torch_modules_are_refused_on_a_warmup_thread(name):
    with pytest.raises(ValueError, match="thread that uses torch"):
        start_warmup((name,))


def test_guard_makes_triton_unimportable_and_torch_sees_no_triton(tmp_path):
    result = _run(
        tmp_path,
        """
        import importlib.util, logging, sys
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        from napari_medseg.widgets.warmup import keep_triton_out
        assert keep_triton_out() is True
        assert keep_triton_out() is False  # once is enough
        try:
            import triton
        except ImportError:
            pass
        else:
            raise SystemExit("import triton succeeded under the guard")
        try:
            import triton.language
        except ImportError:
            pass
        else:
            raise SystemExit("import triton.language succeeded under the guard")
        assert importlib.util.find_spec("triton") is None
        from torch.utils._triton import has_triton, has_triton_package
        assert not has_triton_package() and not has_triton()
        import torch, torch._dynamo, torch._inductor.utils
        p = torch.nn.Parameter(torch.ones(3))
        opt = torch.optim.Adam([p])
        p.sum().backward()
        opt.step()  # the first step imports torch._dynamo and its helpers
        print("ok")
        """,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("ok")
    assert "triton is kept out of the viewer process" in result.stderr
    assert not (tmp_path / "marker").exists()  # nothing loaded the stand-in


def test_without_the_guard_triton_imports_as_usual(tmp_path):
    result = _run(
        tmp_path,
        """
        import napari_medseg.widgets.warmup  # importing the module sets nothing
        import triton
        from torch.utils._triton import has_triton_package
        assert has_triton_package()
        print(triton.__version__)
        """,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "0.0.0"
    assert (tmp_path / "marker").read_text() == "imported"


def test_guard_leaves_an_imported_triton_alone(monkeypatch):
    module = type(sys)("triton")
    monkeypatch.setitem(sys.modules, "triton", module)
    assert keep_triton_out() is False
    assert sys.modules["triton"] is module


def test_panel_keeps_triton_out_before_its_torch_imports(make_napari_viewer, caplog):
    from napari_medseg.widgets.panel import MedSegPanel

    before = sys.modules.get("triton", "missing")
    with caplog.at_level(logging.INFO, logger="napari_medseg.widgets.warmup"):
        panel = MedSegPanel(make_napari_viewer())
    panel.warmup.join(timeout=120)
    if before == "missing":  # not imported before the viewer: kept out from now on
        assert sys.modules["triton"] is None
        assert "triton is kept out of the viewer process" in caplog.text
    else:  # imported (before any OpenGL context) or kept out already: left as it was
        assert sys.modules["triton"] is before


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


def test_any_contribution_keeps_triton_out_of_the_viewer_without_the_panel(tmp_path):
    """The panel is never opened: napari reads a scan through the plugin's reader (its first
    contribution activates the plugin), then torch code runs in the viewer's process as a
    fine-tune from napari's console would (an optimizer step, which imports
    ``torch._dynamo``): triton is not loaded (the stand-in leaves no marker)."""
    import os

    import numpy as np

    from napari_medseg.io import write_volume
    from napari_medseg.types import Geometry

    scan = write_volume(tmp_path / "scan.nii.gz", np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6),
                        Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))  # fmt: skip
    package = tmp_path / "site" / "triton"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(FAKE_TRITON)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(PYTHONPATH=str(tmp_path / "site"), TRITON_MARKER=str(tmp_path / "marker"))
    code = f"""
        import sys
        import napari
        viewer = napari.Viewer(show=True)  # the OpenGL context is up
        viewer.open({str(scan)!r}, plugin="napari-medseg")
        assert sys.modules.get("triton", "missing") is None, sys.modules.get("triton", "missing")
        import torch
        p = torch.nn.Parameter(torch.ones(3))
        opt = torch.optim.AdamW([p])
        p.sum().backward()
        opt.step()
        viewer.close()
        print("ok")
        """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("ok")
    assert not (tmp_path / "marker").exists()  # nothing loaded the stand-in
