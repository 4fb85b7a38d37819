"""Long work off the GUI thread: one job at a time, progress, Stop, locked controls.

The core functions take ``progress(done, total)`` and ``should_stop()`` callbacks; a job
runs one of them in a napari worker thread. Progress crosses to the GUI thread through
a Qt signal (queued connection), results come back through the worker's ``returned``
signal, errors become napari notifications, and the controls are unlocked whatever
happens. Functions run here must not touch Qt or napari layers.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence

from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QLabel, QProgressBar, QPushButton, QWidget

logger = logging.getLogger(__name__)


class JobRunner(QObject):
    """Runs one background job at a time for a panel."""

    progress_changed = Signal(int, int)
    message_changed = Signal(str)

    def __init__(self, progress_bar: QProgressBar, stop_button: QPushButton, status: QLabel) -> None:
        super().__init__()
        self.progress_bar = progress_bar
        self.stop_button = stop_button
        self.status = status
        self.worker = None
        self._stop_requested = False
        self._locked: list[QWidget] = []
        self._name = ""
        self._started = 0.0
        self.progress_changed.connect(self._on_progress)
        self.message_changed.connect(self._on_message)
        self.stop_button.clicked.connect(self.request_stop)
        self.stop_button.setEnabled(False)

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def request_stop(self) -> None:
        """Ask the running job to stop after its current step."""
        self._stop_requested = True
        self.status.setText(f"{self._name}: stopping…")

    def should_stop(self) -> bool:
        return self._stop_requested

    def start(
        self,
        name: str,
        function: Callable[..., Any],
        *,
        on_done: Callable[[Any], None],
        lock: Sequence[QWidget] = (),
        on_error: Callable[[Exception], None] | None = None,
        wants_message: bool = False,
        **kwargs: Any,
    ):
        """Run ``function(progress=..., should_stop=..., **kwargs)`` in a worker thread.

        With ``wants_message`` the function also gets ``message(text)`` for a live readout
        (e.g. the training loss) shown in the status line.
        """
        from napari.qt.threading import create_worker

        if self.busy:
            raise RuntimeError(f"a job ({self._name}) is already running")
        self._name = name
        self._stop_requested = False
        self._started = time.perf_counter()
        self._locked = [w for w in lock if w.isEnabled()]
        for widget in self._locked:
            widget.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.progress_bar.setRange(0, 0)  # busy until the first report
        self.status.setText(f"{name}…")

        if wants_message:
            kwargs["message"] = self.message_changed.emit
        worker = create_worker(
            function,
            progress=self.progress_changed.emit,
            should_stop=self.should_stop,
            _start_thread=False,
            _ignore_errors=True,  # errors are handled by _on_errored, not re-raised in the event loop
            **kwargs,
        )
        worker.returned.connect(lambda result: self._on_returned(result, on_done))
        worker.errored.connect(lambda error: self._on_errored(error, on_error))
        worker.finished.connect(self._on_finished)
        self.worker = worker
        worker.start()
        return worker

    # continuations, on the GUI thread -------------------------------------------------
    def _on_progress(self, done: int, total: int) -> None:
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(done)

    def _on_message(self, text: str) -> None:
        self.status.setText(f"{self._name}: {text}")

    def _on_returned(self, result: Any, on_done: Callable[[Any], None]) -> None:
        seconds = time.perf_counter() - self._started
        try:
            on_done(result)
        except Exception as exc:  # noqa: BLE001 - a failing continuation must not kill the panel
            logger.exception("%s: showing the result failed", self._name)
            self._notify_error(f"{self._name}: {exc}")
            return
        self.status.setText(f"{self._name}: done in {seconds:.1f} s")

    def _on_errored(self, error: Exception, on_error: Callable[[Exception], None] | None) -> None:
        from ..control import Cancelled

        if isinstance(error, Cancelled) or type(error).__name__ == "Cancelled":
            self.status.setText(f"{self._name}: stopped")
            from napari.utils.notifications import show_info

            show_info(f"{self._name} stopped")
        else:
            self.status.setText(f"{self._name}: failed")
            self._notify_error(f"{self._name} failed: {error}")
        if on_error is not None:
            on_error(error)

    def _notify_error(self, message: str) -> None:
        from napari.utils.notifications import show_error

        show_error(message)

    def _on_finished(self) -> None:
        for widget in self._locked:
            widget.setEnabled(True)
        self._locked = []
        self.stop_button.setEnabled(False)
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(1 if not self._stop_requested else 0)
        self.worker = None
