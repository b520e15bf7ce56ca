"""Pacing the audit trail's history replay: one process-wide, first-come-first-served event budget.

A `WatchAuditEvents` stream from an old sequence replays the trail's history to its client,
and in one process that work shares the event loop (and the GIL) with every decision: 200
streams from sequence 0 kept a sidecar at a full core for a minute and took Decide from ~1 ms to
~90 ms at p99 (bench/README.md, "Audit watchers beside decisions"). `ReplayPacer` bounds that
work to `rate` replayed events per second, all streams together: a watcher acquires a page's
events before reading the page from the trail (so the opening burst of first pages is spread
too) and gets back what the page did not use.

Fair: the budget is a token bucket whose reservations are served in the order they were made
(`TokenBucket.reserve` moves the bucket below zero and hands each caller its own wait), so every
stream catching up gets its page in turn and none can starve another. A reservation whose
caller leaves before its turn is given back.

`TokenBucket` is pure (the clock is passed in); `ReplayPacer` adds only the sleeping. Must never
read the trail, pace live events (those appended after a watcher caught up go out as they come:
the trail's `watch` asks the pacer only for history), or block a thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

__all__ = ["DEFAULT_REPLAY_BURST", "Pacer", "ReplayPacer", "TokenBucket", "page_paid", "page_reserved"]

DEFAULT_REPLAY_BURST: Final = 100  # events: one backlog page of a watcher (the trails' WATCH_CHUNK)


class Pacer(Protocol):
    """What a trail's `watch` asks before each page of history it reads (None: no pacing)."""

    async def acquire(self, events: int) -> None:
        """Returns when `events` more may be replayed (at once when within the budget)."""
        ...

    def refund(self, events: int) -> None:
        """Gives back part of an acquisition the page did not use (it held fewer events)."""
        ...


async def page_reserved(pace: Pacer | None, head: int | None, last: int, page: int, live: bool) -> int:
    """A trail's `watch`, before reading the history page after `last`: the events that page can
    hold up to the known `head` sequence, acquired from `pace`; 0 (nothing asked) once live, with
    no pacer or no known head."""
    reserved = 0 if live or head is None else min(page, head - last)
    if pace is not None and reserved > 0:
        await pace.acquire(reserved)
    return reserved


async def page_paid(pace: Pacer | None, reserved: int, held: int, live: bool) -> None:
    """After the page: what it did not hold is refunded, what it held beyond the reservation (the
    head moved meanwhile) is acquired, so history costs exactly its events."""
    if pace is None or live or reserved == held:
        return
    if reserved > held:
        pace.refund(reserved - held)
    else:
        await pace.acquire(held - reserved)


class TokenBucket:
    """`rate` tokens per second, holding at most `burst`; reservations queue, first come first served.

    `reserve(n, now)` always succeeds: it takes `n` tokens, going below zero if need be, and
    returns how many seconds the caller must wait before using them, which is when the tokens
    taken before it and its own have been earned. Thread-safe; pure (time is an argument).
    """

    __slots__ = ("_last", "_lock", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be positive (got {rate})")
        if not burst >= 1:
            raise ValueError(f"burst must be at least 1 (got {burst})")
        self.rate = rate
        self.burst = burst
        self._tokens = burst  # a full bucket: the first page of a quiet sidecar goes at once
        self._last = now
        self._lock = threading.Lock()

    def _refill(self, now: float) -> None:
        if now > self._last:  # a clock that stands still or steps back earns nothing
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now

    def reserve(self, n: int, now: float) -> float:
        """Takes `n` tokens; the seconds from `now` until they are earned (0: now)."""
        with self._lock:
            self._refill(now)
            self._tokens -= n
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def refund(self, n: int, now: float) -> None:
        """Gives `n` tokens back (at most up to a full bucket): later reservations wait less."""
        with self._lock:
            self._refill(now)
            self._tokens = min(self.burst, self._tokens + n)

    def tokens(self, now: float) -> float:
        """The tokens available at `now` (negative: reservations are queued that long)."""
        with self._lock:
            self._refill(now)
            return self._tokens


class ReplayPacer:
    """A `Pacer` of `rate` events per second (with a `burst` of events) shared by every watcher of a process."""

    def __init__(
        self,
        rate: float,
        *,
        burst: int = DEFAULT_REPLAY_BURST,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self.bucket = TokenBucket(rate, burst, clock())

    @property
    def rate(self) -> float:
        return self.bucket.rate

    async def acquire(self, events: int) -> None:
        if events <= 0:
            return
        delay = self.bucket.reserve(events, self._clock())
        if delay <= 0:
            return
        try:
            await self._sleep(delay)
        except BaseException:  # the watcher left before its turn: its reservation goes to those behind it
            self.bucket.refund(events, self._clock())
            raise

    def refund(self, events: int) -> None:
        if events > 0:
            self.bucket.refund(events, self._clock())
