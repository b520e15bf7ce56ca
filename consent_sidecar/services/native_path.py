"""The decision service's C path: plain requests decided by consent_core._native from request bytes
to response bytes, and counted for metrics as the Python path counts them.

Owns the calls into the extension (module attributes, None when it is absent or CONSENT_CORE_PURE=1,
so tests can swap them) and what the server does with their results: a batch's counts added to
the Recorder in one step, a request's counts as one shared Tally per distinct count. The C declines
(None) anything outside the plain case: errors, Segment events, `explain`, non-ASCII or invalid
ids, over-limit counts; the caller then decides in Python, which stays the reference. Never used
with the decision log (its samples are built from Python answers). Never logs; never blocks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from consent_core.native import NATIVE

from consent_sidecar.observe.metrics import Recorder, Tally
from consent_sidecar.services.answers import Answer

__all__ = ["NativePath", "decide_batch", "decide_batch_counted", "decide_request", "decide_request_counted"]

_Reasons = tuple[tuple[int, int], ...]
_Shadow = tuple[tuple[str, str, int], ...]
# A whole DecideBatch, its response bytes; counted: with its entry count, its decisions by metrics
# slot (reason * 2 + allowed) and its shadow would-block counts (category, destination, count).
decide_batch: Callable[[object, bytes], bytes | None] | None = None if NATIVE is None else NATIVE.decide_batch
decide_batch_counted: Callable[[object, bytes], tuple[bytes, int, tuple[int, ...], _Shadow] | None] | None = (
    None if NATIVE is None else NATIVE.decide_batch_counted
)
# One DecideRequest (a Decide call, a DecideStream message); counted: with its decisions as a Tally
# holds them, (slot, count) pairs and (category, destination, count) triples.
decide_request: Callable[[object, bytes], bytes | None] | None = None if NATIVE is None else NATIVE.decide_request
decide_request_counted: Callable[[object, bytes], tuple[bytes, _Reasons, _Shadow] | None] | None = (
    None if NATIVE is None else NATIVE.decide_request_counted
)

_MAX_TALLIES: Final = 4096


class NativePath:
    """The C path of one DecisionService, counting into its Recorder (None: metrics off)."""

    def __init__(self, recorder: Recorder | None) -> None:
        self._recorder = recorder
        self._tallies: dict[tuple[_Reasons, _Shadow], Tally] = {}

    def batch(self, table: object, data: bytes, t0: float) -> bytes | None:
        """A plain DecideBatch's response bytes, counted and timed as the Python path does; None otherwise."""
        rec = self._recorder
        if rec is None:
            return None if decide_batch is None else decide_batch(table, data)
        if decide_batch_counted is None or (got := decide_batch_counted(table, data)) is None:
            return None
        body, n, counts, shadow = got
        rec.add_slots(counts)
        if shadow:
            rec.count(Tally((), shadow))
        rec.batch.observe(n)
        rec.rpc["DecideBatch"].observe(time.perf_counter() - t0)
        return body

    def answer(self, table: object, data: bytes) -> Answer | None:
        """A plain request's Answer (to serve and keep in a memo), its Tally when counting; None otherwise."""
        if self._recorder is None:
            if decide_request is None or (body := decide_request(table, data)) is None:
                return None
            return Answer(body, None, None, ())
        if decide_request_counted is None or (got := decide_request_counted(table, data)) is None:
            return None
        return Answer(got[0], self._tally(got[1], got[2]), None, ())

    def unkept(self, rpc: str, table: object, data: bytes, t0: float) -> bytes | None:
        """With the memos off (requests that do not repeat), a plain request's body, counted and timed
        as the service's `_served_one` would, with nothing built or kept; None otherwise."""
        rec = self._recorder
        if rec is None:
            return None if decide_request is None else decide_request(table, data)
        if decide_request_counted is None or (got := decide_request_counted(table, data)) is None:
            return None
        t = self._tally(got[1], got[2])
        pending = rec.pending
        pending[t] = pending.get(t, 0) + 1
        rec.rpc[rpc].observe(time.perf_counter() - t0)
        return got[0]

    def _tally(self, reasons: _Reasons, shadow: _Shadow) -> Tally:
        """One Tally per distinct count (Tallies are hashed by identity): answers that count alike
        share one, so the Recorder's pending counts stay a few entries."""
        tallies = self._tallies
        key = (reasons, shadow)
        t = tallies.get(key)
        if t is None:
            if len(tallies) >= _MAX_TALLIES:  # bounded: a hostile mix of counts cannot grow it
                tallies.clear()
            t = tallies[key] = Tally(reasons, shadow)
        return t
