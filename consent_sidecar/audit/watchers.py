"""The live end of the audit trail: one bounded queue per `AuditLog.watch()` iterator.

Owns how appended records reach watchers on their own event loops (hand-off with
`call_soon_threadsafe`, never blocking the appender), the per-watcher bound, and the
cut-off of a watcher that falls behind. Must never block or wait on a consumer, buffer
without bound, or read the database (catching up is `AuditLog.watch`'s job).

The queue holds append batches, not copies: every watcher of a loop is handed the same list
of records, so a batch costs memory once however many watch it. A watcher is cut off when
it already has events waiting and a new batch would take it past `buffer` events: one
batch always fits an empty queue (a 20,000-destination create is one batch of 20,002
events and cuts off nobody who keeps up), while a consumer that stops reading is cut off at
the next append after its queue holds anything, never buffered for.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import Callable

from consent_core import errors

from consent_sidecar.audit.records import AuditRecord

__all__ = ["Fanout", "Watcher", "check_watch", "cut_off"]


class Watcher:
    """One `watch()` iterator's end of the fan-out; `deliver` and `close` run on its loop (call_soon_threadsafe)."""

    __slots__ = ("_at", "_wakeup", "batches", "buffer", "closed", "dropped", "forget", "live", "loop", "pending")

    def __init__(self, loop: asyncio.AbstractEventLoop, buffer: int, forget: Callable[[Watcher], None]) -> None:
        self.loop = loop
        self.forget = forget  # deregisters from the log
        self.buffer = buffer
        self.batches: collections.deque[list[AuditRecord]] = collections.deque()
        self._at = 0  # position in batches[0] of the next record to hand out
        self.pending = 0  # records queued and not yet handed out
        self._wakeup = asyncio.Event()
        self.live = False  # False while catching up from the database: deliveries are read there instead
        self.closed = False  # the log was closed: end cleanly
        self.dropped = False  # the consumer fell behind: cut off

    def deliver(self, records: list[AuditRecord]) -> None:
        """On the loop: queue a batch; a consumer already behind that it would take past `buffer` is cut off."""
        if self.closed or self.dropped or not self.live or not records:
            return
        if self.pending and self.pending + len(records) > self.buffer:
            # Cut off: stop receiving, free the queue; the iterator raises at its next step.
            self.dropped = True
            self.forget(self)
            self.batches.clear()
            self.pending = self._at = 0
        else:
            self.batches.append(records)
            self.pending += len(records)
        self._wakeup.set()

    def close(self) -> None:
        """On the loop: end the iterator at its next step (wakes it if it waits on an empty queue)."""
        self.closed = True
        self._wakeup.set()

    async def next(self) -> AuditRecord | None:
        """The next queued record; None once closed or cut off (the caller checks which)."""
        while not self.batches:
            if self.closed or self.dropped:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.closed or self.dropped:
            return None
        batch = self.batches[0]
        record = batch[self._at]
        self._at += 1
        self.pending -= 1
        if self._at == len(batch):
            self.batches.popleft()
            self._at = 0
        return record


def check_watch(after_sequence: int, buffer: int) -> None:
    """A `watch()` call's arguments, checked alike by both trails: InvalidArgument, or ValueError for `buffer`."""
    if after_sequence < 0:
        raise errors.InvalidArgument("after_sequence", f"must not be negative (got {after_sequence})")
    if buffer < 1:
        raise ValueError(f"buffer must be at least 1 (got {buffer})")


def cut_off(w: Watcher, last: int) -> errors.ResourceExhausted:
    """The error ending a watcher that fell behind, naming where to resume."""
    return errors.ResourceExhausted(
        f"audit watcher fell behind: more than {w.buffer} events waiting; "
        f"watch again with after_sequence={last} to resume"
    )


class Fanout:
    """The registered watchers of one log: register, hand a committed batch to each, close them all."""

    def __init__(self) -> None:
        self._watchers: set[Watcher] = set()
        self._lock = threading.Lock()
        self._closed = False

    def __len__(self) -> int:
        with self._lock:
            return len(self._watchers)

    def register(self, loop: asyncio.AbstractEventLoop, buffer: int) -> Watcher | None:
        """A new watcher on `loop`, or None once closed."""
        w = Watcher(loop, buffer, self.forget)
        with self._lock:
            if self._closed:
                return None
            self._watchers.add(w)
        return w

    def forget(self, w: Watcher) -> None:
        with self._lock:
            self._watchers.discard(w)

    def hand_off(self, records: list[AuditRecord]) -> None:
        """Schedule delivery of one committed batch to every watcher; never blocks.

        Call under the log's write lock, so every loop gets batches in commit order.
        """
        with self._lock:
            watchers = list(self._watchers)
        for w in watchers:
            try:
                w.loop.call_soon_threadsafe(w.deliver, records)
            except RuntimeError:  # its loop is closed: nobody is listening any more
                self.forget(w)

    def close(self) -> None:
        """End every watcher cleanly at its next step; later registrations get None."""
        with self._lock:
            self._closed = True
            watchers, self._watchers = list(self._watchers), set()
        for w in watchers:
            with contextlib.suppress(RuntimeError):  # loop already closed
                w.loop.call_soon_threadsafe(w.close)
