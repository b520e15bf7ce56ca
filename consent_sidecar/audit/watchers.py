"""The live end of the audit trail: one bounded queue per `AuditLog.watch()` iterator.

Owns how appended records reach watchers on their own event loops (hand-off with
`call_soon_threadsafe`, never blocking the appender), the per-watcher bound, and the
cut-off of a watcher that falls behind. Must never block or wait on a consumer, buffer
without bound, or read the database (catching up is `AuditLog.watch`'s job).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from consent_core import errors

from consent_sidecar.audit.records import AuditRecord

__all__ = ["Watcher", "cut_off"]


class Watcher:
    """One `watch()` iterator's end of the fan-out; `deliver` and `close` run on its loop (call_soon_threadsafe)."""

    __slots__ = ("buffer", "closed", "dropped", "forget", "live", "loop", "queue")

    def __init__(self, loop: asyncio.AbstractEventLoop, buffer: int, forget: Callable[[Watcher], None]) -> None:
        self.loop = loop
        self.forget = forget  # deregisters from the log
        self.buffer = buffer
        self.queue: asyncio.Queue[AuditRecord | None] = asyncio.Queue(maxsize=buffer)
        self.live = False  # False while catching up from the database: deliveries are read there instead
        self.closed = False  # the log was closed: end cleanly
        self.dropped = False  # the buffer overflowed: cut off

    def deliver(self, records: list[AuditRecord]) -> None:
        """On the loop: queue new records; on overflow mark the watcher cut off and wake it."""
        if self.closed or self.dropped or not self.live:
            return
        for r in records:
            try:
                self.queue.put_nowait(r)
            except asyncio.QueueFull:
                # Cut off: stop receiving, free the buffer; the iterator raises at its next step.
                self.dropped = True
                self.forget(self)
                while not self.queue.empty():
                    self.queue.get_nowait()
                self.queue.put_nowait(None)
                return

    def close(self) -> None:
        """On the loop: end the iterator at its next step (wakes it if it waits on an empty queue)."""
        self.closed = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)


def cut_off(w: Watcher, last: int) -> errors.ResourceExhausted:
    """The error ending a watcher that fell behind, naming where to resume."""
    return errors.ResourceExhausted(
        f"audit watcher fell behind: more than {w.buffer} events waiting; "
        f"watch again with after_sequence={last} to resume"
    )
