"""The hard deadline on shutdown: a process still alive `--grace-period` + 2 s after SIGTERM ends itself.

The drain is bounded by the grace period, but what comes after it is not: an admin write whose
thread is stuck in open() on a FIFO, an audit append waiting on a wedged database, and
asyncio.run() and the interpreter's exit both wait for such threads for ever. An orchestrator
would then SIGKILL the process without a word of why. `ExitDeadline.arm` (when shutdown
begins) starts a daemon thread that, if the process is still there when the deadline passes,
logs what is stuck (the innermost frame of every other thread), flushes the logs and calls
os._exit with the exit code already decided (0 by default: a requested stop).
Used only by a process of its own (`server.run`, a worker's main): never armed inside a test's
or an embedder's process. Must never touch the event loop: it runs beside one that may be stuck.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Final

from consent_sidecar.observe import logs

__all__ = ["EXIT_MARGIN", "ExitDeadline"]

EXIT_MARGIN: Final = 2.0  # seconds after the grace period before the process ends itself

_log = logs.get_logger(__name__)


class ExitDeadline:
    """Ends the process `seconds` after `arm()` unless it has exited by then; `code` is its exit status."""

    def __init__(self, seconds: float, *, code: int = 0, exit: Callable[[int], object] = os._exit) -> None:
        self.seconds = seconds
        self.code = code  # set by the caller once it knows better (the drain's result)
        self._exit = exit
        self._armed = threading.Event()
        self._disarmed = threading.Event()

    def arm(self) -> None:
        """Starts the countdown (idempotent: the first call counts)."""
        if self._armed.is_set():
            return
        self._armed.set()
        threading.Thread(target=self._countdown, name="exit-deadline", daemon=True).start()

    def disarm(self) -> None:
        """The process is exiting on its own terms (tests; an embedder that keeps running)."""
        self._disarmed.set()

    def _countdown(self) -> None:
        if self._disarmed.wait(self.seconds):
            return
        with contextlib.suppress(Exception):  # nothing here may stop the exit
            _log.error(
                "shutdown did not finish in time: exiting now", deadline_seconds=self.seconds,
                exit_code=self.code, stuck=_stuck_threads(),
            )
        _flush_logs()
        self._exit(self.code)


# Where an idle thread waits (a pool worker, the event loop between events): not what is stuck.
_IDLE_FILES: Final = frozenset({"threading.py", "queue.py", "selectors.py", "thread.py"})


def _stuck_threads() -> list[str]:
    """`thread-name: function (file:line)` of the innermost frame of every other busy thread."""
    me = threading.get_ident()
    names = {t.ident: t.name for t in threading.enumerate()}
    out = []
    for ident, frame in sys._current_frames().items():
        where = os.path.basename(frame.f_code.co_filename)
        if ident == me or where in _IDLE_FILES:
            continue
        out.append(f"{names.get(ident, ident)}: {frame.f_code.co_name} ({where}:{frame.f_lineno})")
    return out


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
