"""The native Decide / DecideStream message (consent_core._native.decide_request) answers byte for byte
as the Python path, or declines.

The oracle is the server's own unary Python path (`DecisionService.decide_bytes` with no native
table) on the same snapshot: for random mappings and requests, the native answer is None or the
very same bytes, and for plain requests (consent or none, explain false, valid ASCII ids within
the limits) it must not be None. With metrics (`decide_request_counted`), the decisions counted by
reason and outcome and the shadow would-block counts equal the Python path's Tally. The server
takes it for Decide and DecideStream, with or without metrics, and not with the decision log.
tests/services/test_decision_native.py does the same for whole batches; it holds the strategies
this module reuses, and the random-bytes and reference-count tests of both entry points.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from consent.v1 import decision_pb2
from consent_core.index import compile
from consent_core.model import ConsentMapping
from consent_core.native import NATIVE
from consent_core.outcome import Reason
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent_sidecar.observe.metrics import Metrics, Recorder, _slot
from consent_sidecar.services import decision
from consent_sidecar.services.decision import DecisionService
from consent_sidecar.store.policy import PolicyStore
from tests.core.test_index import _SHARED, mappings
from tests.services.test_decision_native import (
    LIMITS,
    NO_SHADOW,
    SHAPES,
    Aborted,
    Context,
    _recorded,
    _request,
    _run,
)

pytestmark = pytest.mark.skipif(NATIVE is None, reason="consent_core._native not built or CONSENT_CORE_PURE=1")

Req = decision_pb2.DecideRequest
RequestCounted = tuple[bytes, tuple[tuple[int, int], ...], tuple[tuple[str, str, int], ...]]


class One:
    """One snapshot served by the Python path (with metrics when `counted`), and its native table."""

    def __init__(self, mapping: ConsentMapping, *, counted: bool = False) -> None:
        store = PolicyStore()
        store.publish(compile(mapping), source="test")
        self.recorder = Recorder(Metrics()) if counted else None
        self.service = DecisionService(store, LIMITS, recorder=self.recorder)
        served = self.service._served()
        self.table = served.batch_table
        served.batch_table = None  # the service answers in Python from now on
        assert self.table is not None

    def python(self, data: bytes) -> bytes | Exception:
        try:
            return _run(self.service.decide_bytes(data, Context()))  # type: ignore[arg-type]
        except (DecodeError, Aborted) as e:
            return e

    def native(self, data: bytes) -> bytes | None:
        assert NATIVE is not None
        out: bytes | None = NATIVE.decide_request(self.table, data)
        return out

    def check(self, data: bytes) -> bytes | None:
        """The native answer, having checked it is None or the Python path's bytes."""
        got = self.native(data)
        if got is not None:
            assert got == self.python(data)
        return got

    def check_counted(self, data: bytes) -> RequestCounted | None:
        """The native counted answer, having checked its bytes and counts against the Python path's."""
        assert NATIVE is not None and self.recorder is not None
        got: RequestCounted | None = NATIVE.decide_request_counted(self.table, data)
        if got is None:
            return None
        body, reasons, shadow_counts = got
        assert body == NATIVE.decide_request(self.table, data) == self.python(data)
        slots, shadow = _recorded(self.recorder)
        assert dict(reasons) == slots and len(reasons) == len(slots)
        assert [s for s, _ in reasons] == sorted(s for s, _ in reasons) and all(c for _, c in reasons)
        assert {(cat, dest): c for cat, dest, c in shadow_counts} == shadow
        return got


@st.composite
def requests(draw: st.DrawFn, plain: bool) -> bytes:
    return _request(draw, plain).SerializeToString()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mappings(), requests(plain=True))
def test_plain_requests_are_decided_natively_as_the_python_path(mapping: ConsentMapping, data: bytes) -> None:
    assert One(mapping).check(data) is not None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mappings(), requests(plain=False))
def test_any_request_is_declined_or_decided_as_the_python_path(mapping: ConsentMapping, data: bytes) -> None:
    One(mapping).check(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mappings(), requests(plain=True))
def test_native_counts_of_a_request_are_the_python_paths_tally(mapping: ConsentMapping, data: bytes) -> None:
    assert One(mapping, counted=True).check_counted(data) is not None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mappings(), requests(plain=False))
def test_native_counts_of_any_request_are_the_python_paths_or_declined(mapping: ConsentMapping, data: bytes) -> None:
    One(mapping, counted=True).check_counted(data)


@pytest.mark.parametrize(("name", "request_", "native"), SHAPES, ids=[s[0] for s in SHAPES])
def test_wire_shapes_are_decided_as_the_python_path_or_declined(name: str, request_: bytes, native: bool) -> None:
    assert (One(_SHARED.mapping).check(request_) is not None) == native


@pytest.mark.parametrize(
    ("name", "data", "python_refuses"),
    [
        ("too many destinations", b"\x1a\x03amp" * (LIMITS.max_destinations + 1), True),
        ("truncated", b"\x1a\x03am", True),
        ("a batch, not a request", b"\x0a\x05\x1a\x03amp", False),
    ],
)
def test_what_the_python_path_refuses_or_the_c_doubts_is_declined(name: str, data: bytes, python_refuses: bool) -> None:
    one = One(_SHARED.mapping)
    assert one.native(data) is None
    assert isinstance(one.python(data), Exception) == python_refuses


async def _stream(service: DecisionService, messages: list[bytes]) -> list[bytes]:
    async def feed() -> AsyncIterator[bytes]:
        for m in messages:
            yield m

    return [body async for body in service.decide_stream_bytes(feed(), Context())]  # type: ignore[arg-type]


@pytest.mark.parametrize("setup", ["lean", "metrics", "decision log"])
async def test_decide_and_stream_take_the_native_path_unless_the_decision_log_samples(
    setup: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from consent_sidecar.observe.decision_log import DecisionLog

    calls: list[str] = []
    real, real_counted = decision._native_request, decision._native_request_counted
    assert real is not None and real_counted is not None

    def spy(table: object, data: bytes) -> bytes | None:
        calls.append("lean")
        return real(table, data)

    def spy_counted(table: object, data: bytes) -> RequestCounted | None:
        calls.append("counted")
        return real_counted(table, data)

    monkeypatch.setattr(decision, "_native_request", spy)
    monkeypatch.setattr(decision, "_native_request_counted", spy_counted)
    store = PolicyStore()
    store.publish(compile(NO_SHADOW), source="test")
    dlog = DecisionLog(str(tmp_path / "log"), sample=0.0) if setup == "decision log" else None
    recorder = None if setup == "lean" else Recorder(Metrics())
    service = DecisionService(store, LIMITS, recorder=recorder, decision_log=dlog)
    # distinct requests: a repeated one would be answered from the memo, natively decided or not
    messages = [Req(destinations=[f"t{i}", "amp"]).SerializeToString() for i in range(6)]
    oracle = One(NO_SHADOW)
    try:
        unary = [await service.decide_bytes(m, Context()) for m in messages[:3]]  # type: ignore[arg-type]
        streamed = await _stream(service, messages[3:])
    finally:
        if dlog is not None:
            dlog.close()
    assert [*unary, *streamed] == [oracle.python(m) for m in messages]
    expected = {"lean": ["lean"] * 6, "metrics": ["counted"] * 6, "decision log": []}[setup]
    assert calls == expected
    if recorder is not None:  # no consent object: 2 destinations allowed, NO_CONSENT, in each of 6 answers
        assert _recorded(recorder)[0] == {_slot(Reason.NO_CONSENT, True): 12}
