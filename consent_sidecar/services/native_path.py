"""DecisionService's native path for one request: a Decide call, a DecideStream message, a batch entry.

Owns the per-request use of consent_core._native (`decide_request`, `decide_request_counted`):
one encoded DecideRequest in the plain case (consent or none, no explain, valid ASCII ids within
the limits) decided in C from its bytes to the DecideResponse body the Python path would return,
byte for byte, over the snapshot's `Served.batch_table`; with metrics, its decisions counted as
`tally` would count them. Both functions answer None for everything else, and the caller then
takes the Python path, which answers or names the error exactly as without the extension.

Two shapes, for two kinds of traffic:
- `native_answer`: an `Answer`, for the memos (requests that repeat) and batch entries;
- `native_body`: only the body, its counts added to the Recorder in place (`Recorder.add_counts`),
  for Decide and DecideStream while the raw memo is off (lists that vary): nothing is kept, so
  nothing is allocated per message beyond the body and the C's small count tuples (no Answer, no
  framed copy, no Tally left in `Recorder.pending` until the next flush for the collector to scan).

Never decides in Python, never logs, never does I/O, and is never used with the decision log
(whose samples need the Python path's granted mask and ids): the Answers made here carry neither.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from consent_core.native import NATIVE

from consent_sidecar.observe.metrics import Recorder, Tally
from consent_sidecar.services.answers import Answer

__all__ = ["native_answer", "native_body"]

Reasons = tuple[tuple[int, int], ...]
Shadow = tuple[tuple[str, str, int], ...]
RequestCounted = tuple[bytes, Reasons, Shadow]

# One encoded DecideRequest -> its DecideResponse body (None: not plain; the attribute is None
# without the extension or under CONSENT_CORE_PURE=1).
_native_request: Final[Callable[[object, bytes], bytes | None] | None] = (
    None if NATIVE is None else NATIVE.decide_request
)
# The same, with its decisions as a Tally holds them: the nonzero (slot, count) pairs and the
# (category, destination, count) shadow would-block triples.
_native_request_counted: Final[Callable[[object, bytes], RequestCounted | None] | None] = (
    None if NATIVE is None else NATIVE.decide_request_counted
)


def native_answer(table: object, data: bytes, counting: bool) -> Answer | None:
    """The plain request decided in C as an Answer (with its Tally when `counting`), or None for
    anything else (errors, Segment events, explain...), which then goes the Python way."""
    if not counting:
        if _native_request is None or (body := _native_request(table, data)) is None:
            return None
        return Answer(body, None, None, ())
    if _native_request_counted is None or (got := _native_request_counted(table, data)) is None:
        return None
    body, reasons, shadow = got
    return Answer(body, Tally(reasons, shadow), None, ())


def native_body(rpc: str, table: object, data: bytes, rec: Recorder | None, t0: float) -> bytes | None:
    """The plain request's DecideResponse body, its decisions counted into `rec` and its time since
    `t0` observed under `rpc`, as `DecisionService._served_one` counts an Answer; None (nothing
    counted) for anything else."""
    if rec is None:
        return None if _native_request is None else _native_request(table, data)
    if _native_request_counted is None or (got := _native_request_counted(table, data)) is None:
        return None
    body, reasons, shadow = got
    rec.add_counts(reasons, shadow)
    rec.rpc[rpc].observe(time.perf_counter() - t0)
    return body
