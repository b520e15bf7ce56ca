"""Decision logs: sampled, rate-limited JSON lines about decisions, written off the hot path.

The hot path pays one `random() < sample` per decision; a sampled decision passes a token
bucket (`--decision-log-rate`) and goes onto a bounded queue as its inputs (policy snapshot,
granted mask, destinations): a thread drains the queue, re-derives the reasons from the pure
index and writes the lines. Under pressure lines are dropped, never queued without bound, and
every drop is counted (`consent_sidecar_decision_log_dropped_total`); the audit trail is a
different thing and never drops.

A line holds the request id, the RPC (and entry or message number), the policy generation and
digest, the allowed and blocked destinations, each destination with its reason, and the
consent reduced to the mapping's enabled category ids: granted (`true`), denied (`false`) and
absent (not in the event, which is not granted either). Never any other event
content: no `categoryPreferences` keys the mapping does not know, no `integrations`, no event
fields, no tokens.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Final

from consent_core.index import Index

__all__ = ["DEFAULT_QUEUE", "DecisionLog", "Entry", "TokenBucket", "format_line", "parse_rate"]

DEFAULT_QUEUE: Final = 10_000  # lines waiting for the writer thread before drops begin
_PIPE_BUF: Final = 4096  # writes up to this size are atomic on a pipe: workers' lines never interleave


def parse_rate(text: str) -> float | None:
    """`100`, `100/s`, `6000/m`, `0` or `unlimited` -> lines per second (None = no limit)."""
    t = text.strip().lower()
    if t in ("", "0", "none", "unlimited", "inf"):
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|second|m|min|minute|h|hour))?", t)
    if not m:
        raise ValueError(f"decision log rate {text!r}: expected N, N/s, N/m or N/h")
    per = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
    value = float(m.group(1)) / per[m.group(2) or "s"]
    return value if value > 0 else None


class TokenBucket:
    """`rate` tokens per second, holding at most `burst`; `take` is O(1) and never blocks."""

    __slots__ = ("_clock", "_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()

    def take(self) -> bool:
        now = self._clock()
        tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return True
        self._tokens = tokens
        return False


@dataclass(frozen=True, slots=True)
class Entry:
    """One sampled decision as the hot path hands it over: inputs only, formatted later."""

    rpc: str
    request_id: str | None
    position: int | None  # the batch entry or stream message number; None for unary Decide
    generation: int
    index: Index
    granted: int | None  # None = no consent object
    destinations: tuple[str, ...]
    integrations: Mapping[str, object] | None = None
    preference_event: bool = False
    time: float = 0.0  # time.time() when sampled
    request: bytes = b""  # the encoded DecideRequest: which categories it set false is read from it, off the hot path


def _denied_mask(index: Index, request: bytes) -> int | None:
    """The enabled categories the request's consent set `false` (None when the request cannot tell)."""
    if not request:
        return None
    from consent.v1 import decision_pb2

    try:
        message = decision_pb2.DecideRequest.FromString(request)
        if message.WhichOneof("source") == "consent":
            prefs: object = dict(message.consent.category_preferences)
        else:  # a segment_event the service already validated
            context = json.loads(message.segment_event).get("context") or {}
            prefs = (context.get("consent") or {}).get("categoryPreferences") or {}
    except (ValueError, AttributeError):
        return None
    if not isinstance(prefs, dict):
        return None
    return index.granted_mask({k: True for k, v in prefs.items() if v is False})


def format_line(entry: Entry) -> str:
    """The JSON line for `entry` (keys in a fixed order)."""
    index = entry.index
    outcome = index.decide_mask(
        entry.granted, entry.destinations, integrations=entry.integrations,
        preference_event=entry.preference_event, explain=True,
    )
    consent: dict[str, list[str]] | None = None
    if entry.granted is not None:
        not_granted = index.all_categories_mask & ~entry.granted
        denied = _denied_mask(index, entry.request)
        if denied is None:  # cannot tell false from absent: every category not granted is listed as denied
            denied = not_granted
        consent = {
            "granted": list(index.category_ids(entry.granted)),
            "denied": list(index.category_ids(not_granted & denied)),
            "absent": list(index.category_ids(not_granted & ~denied)),
        }
    line = {
        "time": datetime.fromtimestamp(entry.time, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "request_id": entry.request_id,
        "rpc": entry.rpc,
        "entry": entry.position,
        "policy_generation": entry.generation,
        "policy_digest": index.digest,
        "consent": consent,
        "allowed": list(outcome.allowed),
        "blocked": list(outcome.blocked),
        # Each destination named with its reason (a destination named twice is decided the same way twice).
        "reasons": {d.destination: f"REASON_{d.reason.name}" for d in outcome.decisions or ()},
    }
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False)


class DecisionLog:
    """Samples decisions and writes them as JSON lines to a file (appended) or stdout (`-`).

    `sampled()` and `submit()` run on the event loop; a daemon thread formats and writes.
    `dropped` and `written` are plain counters the metrics read (`drain_counts`).
    """

    def __init__(
        self,
        target: str,
        *,
        sample: float = 1.0,
        rate: float | None = None,
        burst: float | None = None,
        queue_size: int = DEFAULT_QUEUE,
        random_fn: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        if not 0.0 <= sample <= 1.0:
            raise ValueError(f"decision log sample {sample}: must be between 0 and 1")
        self.target = target
        self.sample = sample
        self._random = random_fn
        self._bucket = TokenBucket(rate, burst, clock) if rate is not None else None
        self._queue: collections.deque[Entry] = collections.deque()
        self._queue_size = queue_size
        self._wake = threading.Event()
        self._closed = False
        self._on_error = on_error
        self.dropped_rate = 0  # over the rate limit
        self.dropped_full = 0  # the queue was full (the writer cannot keep up)
        self.written = 0
        self._queued = 0  # entries ever queued (loop thread)
        self._done = 0  # entries the writer finished with, written or not (writer thread)
        self._stream: IO[bytes] | None = None
        self._fd = 1 if target == "-" else -1
        if target != "-":
            self._stream = open(target, "ab", buffering=0)  # noqa: SIM115 - closed in close()
            self._fd = self._stream.fileno()
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    # -- hot path -------------------------------------------------------------------------

    def sampled(self) -> bool:
        """Whether to log this decision (one random draw; False when the sample is 0)."""
        return self._random() < self.sample

    def submit(self, entry: Entry) -> bool:
        """Queues a sampled decision; False (and counted) when rate-limited or the queue is full."""
        if self._bucket is not None and not self._bucket.take():
            self.dropped_rate += 1
            return False
        if len(self._queue) >= self._queue_size or self._closed:
            self.dropped_full += 1
            return False
        self._queue.append(entry)
        self._queued += 1
        if not self._wake.is_set():
            self._wake.set()
        return True

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        queue = self._queue
        while True:
            self._wake.wait(0.5)
            self._wake.clear()
            self._write_all(queue)
            if self._closed and not queue:
                return

    def _write_all(self, queue: collections.deque[Entry]) -> None:
        chunk: list[bytes] = []
        size = 0
        while queue:
            entry = queue.popleft()
            try:
                line = (format_line(entry) + "\n").encode()
            except Exception as e:  # a bug here must not kill the thread silently
                self._report(e)
                self._done += 1
                continue
            if size + len(line) > _PIPE_BUF and chunk:
                self._write(b"".join(chunk), len(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        if chunk:
            self._write(b"".join(chunk), len(chunk))

    def _write(self, data: bytes, lines: int) -> None:
        try:
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            self.written += lines
        except OSError as e:
            self.dropped_full += lines
            self._report(e)
        finally:
            self._done += lines

    def _report(self, e: BaseException) -> None:
        if self._on_error is not None:
            with contextlib.suppress(Exception):  # the reporter failing must not stop the logging
                self._on_error(e)

    def flush(self, timeout: float = 5.0) -> bool:
        """Waits until everything queued so far is written or given up; False on timeout."""
        target = self._queued
        deadline = time.monotonic() + timeout
        while self._done < target:
            if time.monotonic() >= deadline or not self._thread.is_alive():
                return False
            self._wake.set()
            time.sleep(0.002)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Writes what is queued, stops the thread and closes the file."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout)
        if self._stream is not None:
            self._stream.close()
            self._stream = None
