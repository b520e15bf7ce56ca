"""Decision logs: sampled, rate-limited JSON lines about decisions, written off the hot path.

The hot path pays one `random() < sample` per decision; a sampled decision passes a token
bucket of lines (`--decision-log-rate`) and one of bytes (`--decision-log-bytes-rate`: a line
naming 10,000 destinations is ~500 KB, so lines alone bound nothing), and goes onto a queue
bounded in entries and in bytes as its inputs (policy snapshot, granted mask, destinations):
a thread drains the queue, re-derives the reasons from the pure index and writes the lines.
A line's bytes are estimated when it is queued (from its destinations and the mapping's
categories; the queue also counts the encoded request a line is read from) and the writer
charges the difference once it knows them exactly, so the byte rate holds over time. Under
pressure lines are dropped, never queued without bound, and every drop is counted by why
(`consent_sidecar_decision_log_dropped_total{why="rate_limit"|"bytes"|"queue_full"}`); the
audit trail is a different thing and never drops.

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

__all__ = ["DEFAULT_QUEUE", "DEFAULT_QUEUE_BYTES", "DecisionLog", "Entry", "TokenBucket", "format_line", "parse_rate"]

DEFAULT_QUEUE: Final = 10_000  # lines waiting for the writer thread before drops begin
DEFAULT_QUEUE_BYTES: Final = 16 << 20  # their estimated bytes, likewise
# A line's estimated bytes: its fixed keys, ids and digest, then per destination its id (quoted,
# in allowed or blocked, and as a key of `reasons`) and its reason, then per enabled category of
# the mapping its id, quoted, in one of the consent lists (when there is a consent object).
_LINE_BYTES: Final = 400
_DESTINATION_BYTES: Final = 36
_CATEGORY_BYTES: Final = 10
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

    def take(self, cost: float = 1.0) -> bool:
        """Takes `cost` tokens if there are that many (a cost above the burst never passes)."""
        now = self._clock()
        tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if tokens >= cost:
            self._tokens = tokens - cost
            return True
        self._tokens = tokens
        return False

    def charge(self, cost: float) -> None:
        """Takes `cost` more tokens whatever is left (the balance may go below zero: a debt repaid at the rate)."""
        self._tokens -= cost


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


def estimate(entry: Entry) -> int:
    """The bytes `entry`'s line will take, about (the writer charges what it missed once it knows)."""
    dests = entry.destinations
    size = _LINE_BYTES + len(entry.request_id or "") + _DESTINATION_BYTES * len(dests) + 2 * sum(map(len, dests))
    if entry.granted is not None:
        size += _CATEGORY_BYTES * entry.index.all_categories_mask.bit_count()
    return size


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
    `dropped_*` and `written` are plain counters the metrics read (`drain_counts`).
    bytes_rate: line bytes per second (None = no limit), in bursts of at most one second's worth;
    queue_bytes: estimated bytes waiting for the writer thread before drops begin.
    """

    def __init__(
        self,
        target: str,
        *,
        sample: float = 1.0,
        rate: float | None = None,
        burst: float | None = None,
        queue_size: int = DEFAULT_QUEUE,
        bytes_rate: float | None = None,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
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
        self._bytes = TokenBucket(bytes_rate, None, clock) if bytes_rate is not None else None
        self._queue: collections.deque[tuple[Entry, int]] = collections.deque()
        self._queue_size = queue_size
        self._queue_bytes = queue_bytes
        # Single-writer counters (the loop thread writes the first two, the writer thread the others):
        # bytes queued and done (their difference is what waits), and estimates the writer found short.
        self._bytes_in = 0
        self._charged = 0
        self._bytes_out = 0
        self._undercharged = 0
        self._wake = threading.Event()
        self._closed = False
        self._on_error = on_error
        self.dropped_rate = 0  # over the rate limit (lines)
        self.dropped_bytes = 0  # over the byte rate
        self.dropped_full = 0  # the queue was full (the writer cannot keep up)
        self.written = 0
        self._queued = 0  # entries ever queued (loop thread)
        self._done = 0  # entries the writer finished with, written or not (writer thread)
        self._stream: IO[bytes] | None = None
        self._fd = 1 if target == "-" else -1
        if target != "-":
            # Created 0600 whatever the umask (it names policies and destinations); a file that
            # exists already keeps the mode its owner gave it.
            flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
            try:
                fd = os.open(target, flags | os.O_CREAT | os.O_EXCL, 0o600)
                os.fchmod(fd, 0o600)  # the umask may have taken more away than that
            except FileExistsError:
                fd = os.open(target, flags)
            self._stream = os.fdopen(fd, "ab", buffering=0)
            self._fd = fd
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    # -- hot path -------------------------------------------------------------------------

    def sampled(self) -> bool:
        """Whether to log this decision (one random draw; False when the sample is 0)."""
        return self._random() < self.sample

    def submit(self, entry: Entry) -> bool:
        """Queues a sampled decision; False (and counted) when rate-limited, over the byte rate or the queue is full."""
        if self._bucket is not None and not self._bucket.take():
            self.dropped_rate += 1
            return False
        size = estimate(entry)
        if self._bytes is not None:
            owed = self._undercharged - self._charged  # bytes the writer found beyond the estimates
            if owed > 0:
                self._bytes.charge(owed)
                self._charged += owed
            if not self._bytes.take(size):
                self.dropped_bytes += 1
                return False
        held = size + len(entry.request)  # what waiting costs: the line to come and the request it is read from
        if (
            len(self._queue) >= self._queue_size or self._bytes_in - self._bytes_out + held > self._queue_bytes
            or self._closed
        ):
            self.dropped_full += 1
            return False
        self._queue.append((entry, size))
        self._bytes_in += held
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

    def _write_all(self, queue: collections.deque[tuple[Entry, int]]) -> None:
        chunk: list[bytes] = []
        size = 0
        while queue:
            entry, estimated = queue.popleft()
            self._bytes_out += estimated + len(entry.request)
            try:
                line = (format_line(entry) + "\n").encode()
            except Exception as e:  # a bug here must not kill the thread silently
                self._report(e)
                self._done += 1
                continue
            if len(line) > estimated:
                self._undercharged += len(line) - estimated
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
