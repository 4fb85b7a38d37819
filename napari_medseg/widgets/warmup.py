"""Start-up imports done when the panel opens, so that no job pays for them later.

The first Labels layer makes napari import pandas (its features table), and the first
optimizer step makes torch import ``torch._dynamo`` (about 1 s, sympy included). Done on
a worker during a job, these imports hold the GIL in long stretches and freeze the viewer
for 100-150 ms at a time; done once when the panel opens, nobody is waiting for them.

Only pure-Python work goes to a background thread. torch's own submodules are imported
on the GUI thread, the thread that loads models.

triton is kept out of the viewer process altogether (:func:`keep_triton_out`, called when
napari first uses any contribution of the plugin (:func:`on_activate`) and again by the
panel before any torch submodule is imported): once the viewer's OpenGL context is up,
loading triton's C extension kills the process on any thread, the GUI thread included.
The plugin never compiles (no ``torch.compile``, no inductor), so torch loses nothing it
uses: with ``sys.modules["triton"] = None``, ``import triton`` raises ImportError and
torch's own checks (``torch.utils._triton.has_triton_package``,
``importlib.util.find_spec("triton")``) report triton as absent.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading

logger = logging.getLogger(__name__)

#: Safe on any thread (no torch C extension is loaded by them).
LAZY_IMPORTS = ("pandas",)
#: Imported on the thread that uses torch (the GUI thread), never on a helper thread.
TORCH_IMPORTS = ("torch._dynamo",)


def keep_triton_out() -> bool:
    """Make ``import triton`` fail in this process from now on (the viewer's, with a GL context).

    Does nothing when triton is already imported: loaded before the first OpenGL context
    it is safe, and after one it is too late anyway. Returns whether the guard was set.
    Call it before anything imports ``torch._dynamo`` (the panel's start-up imports, the
    first optimizer step of a fine-tune).
    """
    if "triton" in sys.modules:  # imported already (a module) or kept out already (None)
        return False
    sys.modules["triton"] = None  # type: ignore[assignment]  # import raises ImportError
    logger.info(
        "triton is kept out of the viewer process: its C extension crashes a process whose "
        "OpenGL context is up, and nothing here compiles with torch"
    )
    return True


def on_activate(ctx=None) -> None:
    """The plugin's activation hook (``on_activate`` in the manifest): napari calls it once,
    when it first runs any of the plugin's contributions (a reader, a writer, a sample, a
    widget). From then on triton is kept out of the viewer's process
    (:func:`keep_triton_out`), so torch code run there later without the panel (a
    fine-tune from napari's console, a script's optimizer step) cannot load it either."""
    keep_triton_out()


def warm_imports(names: tuple[str, ...] = LAZY_IMPORTS) -> None:
    """Import ``names`` now (each at most once per process; missing ones are skipped)."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:  # optional: a later napari or torch may not need it
            logger.debug("warm-up: %s not importable", name)


def start_warmup(names: tuple[str, ...] = LAZY_IMPORTS) -> threading.Thread:
    """:func:`warm_imports` on a daemon thread; returns it (``join()`` to wait).

    Raises:
        ValueError: ``names`` include a torch module (those belong to the torch thread).
    """
    unsafe = [name for name in names if name == "torch" or name.startswith("torch.")]
    if unsafe:
        raise ValueError(f"{unsafe} must be imported on the thread that uses torch, not on a warm-up thread")
    thread = threading.Thread(target=warm_imports, args=(names,), name="napari-medseg-warmup", daemon=True)
    thread.start()
    return thread
