"""The native Decide / DecideStream message (consent_core._native.decide_request) answers byte for byte
as the Python path, or declines.

The oracle is the server's own unary Python path (`DecisionService.decide_bytes` with no native
table) on the same snapshot: for random mappings and requests, the native answer is None or the
very same bytes, and for plain requests (consent or none, explain false, valid ASCII ids within
the limits) it must not be None. With metrics (`decide_request_counted`), the decisions counted by
reason and outcome and the shadow would-block counts equal the Python path's Tally. The server
takes it for Decide and DecideStream, with or without metrics, and not with the decision log;
whole handlers (unary and stream, memo on and off) answer, fail and count as with the native
path off, and over real gRPC as a CONSENT_CORE_PURE=1 sidecar does.
tests/services/test_decision_native.py does the same for whole batches; it holds the strategies
this module reuses, and the random-bytes and reference-count tests of both entry points.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from consent.v1 import decision_pb2, decision_pb2_grpc
from consent_core.index import compile
from consent_core.limits import Limits
from consent_core.model import ConsentMapping
from consent_core.native import NATIVE
from consent_core.outcome import Reason
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from samples import SAMPLE_MAPPING

from consent_sidecar.observe.decision_log import DecisionLog
from consent_sidecar.observe.metrics import Metrics, Recorder, _slot
from consent_sidecar.services import decision, native_path
from consent_sidecar.services.decision import DecisionService
from consent_sidecar.store.policy import PolicyStore
from tests.core.test_index import _SHARED, mappings
from tests.services.test_decision_native import (
    LIMITS,
    NO_SHADOW,
    SHAPES,
    Aborted,
    Context,
    Pair,
    _random_request,
    _recorded,
    _request,
    _run,
)
from tests.serving import WAIT, serve_process

pytestmark = pytest.mark.skipif(NATIVE is None, reason="consent_core._native not built or CONSENT_CORE_PURE=1")

Req = decision_pb2.DecideRequest
RequestCounted = tuple[bytes, tuple[tuple[int, int], ...], tuple[tuple[str, str, int], ...]]


class One(Pair):
    """One snapshot served by the Python path (with metrics when `counted`), and its native table:
    test_decision_native's Pair, deciding single requests instead of batches."""

    def __init__(self, mapping: ConsentMapping, *, counted: bool = False, limits: Limits = LIMITS) -> None:
        super().__init__(mapping, limits, counted=counted)

    def python(self, data: bytes) -> bytes | Exception:
        try:
            return _run(self.service.decide_bytes(data, Context()))  # type: ignore[arg-type]
        except (DecodeError, Aborted) as e:
            return e

    def native(self, data: bytes) -> bytes | None:
        assert NATIVE is not None
        out: bytes | None = NATIVE.decide_request(self.table, data)
        return out

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
    real, real_counted = native_path.decide_request, native_path.decide_request_counted
    assert real is not None and real_counted is not None

    def spy(table: object, data: bytes) -> bytes | None:
        calls.append("lean")
        return real(table, data)

    def spy_counted(table: object, data: bytes) -> RequestCounted | None:
        calls.append("counted")
        return real_counted(table, data)

    monkeypatch.setattr(native_path, "decide_request", spy)
    monkeypatch.setattr(native_path, "decide_request_counted", spy_counted)
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


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mappings(), st.lists(requests(plain=False), min_size=1, max_size=6), st.booleans())
def test_with_the_memos_off_answers_and_counts_are_the_python_paths(
    mapping: ConsentMapping, messages: list[bytes], metrics: bool
) -> None:
    """Requests that do not repeat turn the memos off; the C then answers with nothing kept."""
    oracle = One(mapping, counted=metrics)
    recorder = Recorder(Metrics()) if metrics else None
    store = PolicyStore()
    store.publish(compile(mapping), source="test")
    service = DecisionService(store, LIMITS, recorder=recorder)
    served = service._served()
    served.raw.off = True
    served.raw.countdown = 10**9  # never a sampled call: every one skips the memo
    for m in messages:
        want = oracle.python(m)
        try:
            got: bytes | Exception = _run(service.decide_bytes(m, Context()))  # type: ignore[arg-type]
        except (DecodeError, Aborted) as e:
            got = e
        assert type(got) is type(want) and (got == want or isinstance(got, Exception))
    assert served.raw.hits == 0 and not served.raw.young and not served.raw.old
    if recorder is not None:
        assert oracle.recorder is not None
        assert _recorded(recorder) == _recorded(oracle.recorder)
        assert recorder.errors == oracle.recorder.errors
        assert sum(recorder.rpc["Decide"].counts) == sum(oracle.recorder.rpc["Decide"].counts)


def test_arguments_other_than_a_table_and_bytes_are_a_type_error() -> None:
    assert NATIVE is not None
    one = One(_SHARED.mapping)
    for args in [(one.table, bytearray(b"")), (one.table, memoryview(b"")), (object(), b""), (one.table,), ()]:
        for call in (NATIVE.decide_request, NATIVE.decide_request_counted):
            with pytest.raises(TypeError):
                call(*args)


def test_requests_past_the_c_stack_arrays_are_decided_and_counted_as_the_python_path() -> None:
    """Over 64 picks or shadow rows (the C's stack arrays): instances, repeats, unknown ids, every known id."""
    rng = random.Random(7)
    ids = ["amp", "ga4", "ads", "s3", "braze", "hub", "amp/eu", "hub/x", "braze/1", "ghost", "ghost/2"]
    for n in (0, 63, 64, 65, 200, 1_000):
        for prefs in ({}, {"C0001": True}, {"C0002": True, "Perf": True}, {"C0004": True, "C0003": False}):
            one = One(_SHARED.mapping, counted=True, limits=Limits())
            data = Req(destinations=[rng.choice(ids) for _ in range(n)], consent=decision_pb2.Consent(
                category_preferences=prefs)).SerializeToString()
            assert one.check_counted(data) is not None


# -- whole handlers, native on and off -------------------------------------------------------------


def _unary(service: DecisionService, data: bytes) -> bytes | str:
    """The body, or the error as its type and arguments (an abort's code and message)."""
    try:
        return _run(service.decide_bytes(data, Context()))  # type: ignore[arg-type]
    except (DecodeError, Aborted) as e:
        return f"{type(e).__name__}{e.args}"


def _stream_now(service: DecisionService, messages: list[bytes]) -> list[bytes] | str:
    async def collect() -> list[bytes]:
        return await _stream(service, messages)

    coro: Coroutine[Any, Any, list[bytes]] = collect()
    try:
        coro.send(None)
    except StopIteration as e:
        return e.value  # type: ignore[no-any-return]
    except DecodeError as e:
        return f"DecodeError{e.args}"
    raise AssertionError("the handler suspended")


def _services(mapping: ConsentMapping, metrics: bool) -> tuple[DecisionService, DecisionService]:
    """(native, python): two services over one snapshot, the second without its native table."""
    store = PolicyStore()
    store.publish(compile(mapping), source="test")
    native = DecisionService(store, LIMITS, recorder=Recorder(Metrics()) if metrics else None)
    python = DecisionService(store, LIMITS, recorder=Recorder(Metrics()) if metrics else None)
    assert native._served().batch_table is not None
    python._served().batch_table = None
    return native, python


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mappings(), st.lists(st.one_of(requests(plain=True), requests(plain=False)), max_size=12), st.booleans(),
       st.integers(0, 2), st.booleans())
def test_handlers_answer_fail_and_count_as_the_python_path(
    mapping: ConsentMapping, messages: list[bytes], metrics: bool, repeats: int, memo_off: bool
) -> None:
    """Unary and stream, the memo on (repeats answered from it) or off (`NativePath.unkept`): the same
    bodies, errors (INVALID_ARGUMENT and its message; a stream entry's `error`) and counts."""
    native, python = _services(mapping, metrics)
    if memo_off:
        for service in (native, python):
            raw = service._served().raw
            raw.off, raw.countdown = True, 10**9
    messages = messages * (repeats + 1)
    assert [_unary(native, m) for m in messages] == [_unary(python, m) for m in messages]
    assert _stream_now(native, messages) == _stream_now(python, messages)
    if metrics:
        n, p = native._recorder, python._recorder
        assert n is not None and p is not None
        assert _recorded(n) == _recorded(p) and n.errors == p.errors
        assert [sum(h.counts) for h in n.rpc.values()] == [sum(h.counts) for h in p.rpc.values()]


def test_flushed_metrics_after_decide_and_stream_messages_are_the_same_on_both_paths() -> None:
    """The consent_sidecar_* samples after the same messages (repeated ones, varying ones past the
    memo's window: `NativePath.unkept`'s shared Tallies) equal the Python path's."""
    rng = random.Random(16)
    plain = [_random_request(rng) for _ in range(40)]
    varying = [Req(destinations=["amp", "braze", "hub/x", f"t{i}"], consent=decision_pb2.Consent(
        category_preferences={"C0001": True})) for i in range(1_200)]
    messages = [*plain, Req(destinations=["/amp"]), *plain[:10], *varying, *plain]
    encoded = [m.SerializeToString() for m in messages]
    samples = []
    for native in (True, False):
        service = _services(_SHARED.mapping, True)[0 if native else 1]
        rec = service._recorder
        assert rec is not None
        for data in encoded:
            _unary(service, data)
        _stream_now(service, encoded)
        assert service._served().raw.off  # the varying stretch turned the memo off
        rec.flush()
        samples.append({
            (m.name, s.name, tuple(sorted(s.labels.items()))): s.value
            for m in rec.metrics.registry.collect() for s in m.samples
            if not s.name.endswith("_created") and not s.name.startswith("consent_sidecar_memo_")
            and (not s.name.startswith("consent_sidecar_rpc_duration_seconds_")
                 or s.name == "consent_sidecar_rpc_duration_seconds_count")
        })
    assert samples[0] == samples[1]
    decided = sum(v for k, v in samples[0].items() if k[0] == "consent_sidecar_decisions")
    would_block = [v for k, v in samples[0].items() if k[0] == "consent_sidecar_shadow_would_block"]
    assert decided > 5_000 and would_block and all(would_block)


@pytest.mark.parametrize("metrics", [False, True])
def test_with_the_memo_off_nothing_is_kept_per_message(metrics: bool) -> None:
    """Varying lists: no Answer stored, and the Recorder's pending Tallies stay a few shared ones
    (not one per message for the collector to scan until the flush) while the counts grow."""
    native, _ = _services(_SHARED.mapping, metrics)
    st_ = native._served()
    for i in range(2_000):
        _unary(native, Req(destinations=["amp", "braze", f"t{i}"]).SerializeToString())
    assert st_.raw.off
    kept, rec = len(st_.raw.young) + len(st_.raw.old), native._recorder
    pending = len(rec.pending) if rec is not None else 0
    for i in range(2_000, 4_000):
        body = _unary(native, Req(destinations=["amp", "braze", f"t{i}"], consent=decision_pb2.Consent(
            category_preferences={"C0002": True})).SerializeToString())
        assert isinstance(body, bytes)
    # one call in 8 is the memo's sample (it may keep its answer); the other 7 keep nothing
    assert len(st_.raw.young) + len(st_.raw.old) - kept <= 2_000 // 8 + 1
    if rec is not None:
        assert len(rec.pending) - pending <= 20 and sum(_recorded(rec)[0].values()) >= 2_000 * 3


# -- over real gRPC --------------------------------------------------------------------------------


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records which native per-request function answered (not declined), call by call."""
    calls: list[str] = []
    for name in ("decide_request", "decide_request_counted"):
        real = getattr(native_path, name)
        assert real is not None

        def spy(table: object, data: bytes, real: Any = real, name: str = name) -> Any:
            out = real(table, data)
            if out is not None:
                calls.append(name)
            return out

        monkeypatch.setattr(native_path, name, spy)
    return calls


def _messages(seed: int) -> list[Req]:
    """Plain requests, each distinct (an unknown id of its own), with or without a consent object."""
    rng = random.Random(seed)
    ids = ["amplitude", "mixpanel", "google-ads", "braze", "amplitude/eu", "aws-s3", "hotjar"]
    out = []
    for i in range(60):
        r = Req(destinations=[*rng.sample(ids, rng.randrange(len(ids))), f"tool-{seed}-{i}"])
        if i % 4:
            r.consent.category_preferences.update({c: rng.random() < 0.5 for c in ("C0002", "C0003", "C0004")})
        out.append(r)
    return out


async def _answers(channel: grpc.aio.Channel, calls: list[str]) -> tuple[list[Any], list[int]]:
    """Decide and DecideStream answers to plain, explained and invalid requests, and how many
    plain ones the native path answered in each."""
    stub = decision_pb2_grpc.DecisionServiceStub(channel)  # type: ignore[no-untyped-call]
    explained = Req(destinations=["amplitude"], explain=True)  # the Python path
    unary = [await stub.Decide(m, timeout=WAIT) for m in [*_messages(1), explained]]
    n_unary = len(calls)
    try:
        await stub.Decide(Req(destinations=[""]), timeout=WAIT)
        raise AssertionError("an empty id was accepted")
    except grpc.aio.AioRpcError as e:
        error = (e.code(), e.details())
    streamed = [
        r async for r in stub.DecideStream(iter([*_messages(2), explained, Req(destinations=["/x"])]), timeout=WAIT)
    ]
    return [unary, error, streamed], [n_unary, len(calls) - n_unary]


@pytest.mark.parametrize("metrics", [False, True])
async def test_over_grpc_the_server_takes_the_native_path_and_answers_as_a_pure_sidecar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, metrics: bool
) -> None:
    calls = _spy(monkeypatch)
    path = tmp_path / "mappings.yaml"
    path.write_text(SAMPLE_MAPPING)
    store = PolicyStore()
    store.load_initial(str(path))

    async def served_by(dlog: DecisionLog | None) -> tuple[list[Any], list[int]]:
        server = grpc.aio.server()
        service = DecisionService(store, Limits(), recorder=Recorder(Metrics()) if metrics else None, decision_log=dlog)
        decision.add_to_server(service, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                return await _answers(channel, calls)
        finally:
            await server.stop(None)

    native, native_calls = await served_by(None)
    assert native_calls == [60, 60]  # every plain message, unary and streamed, and nothing else
    assert set(calls) == {"decide_request_counted" if metrics else "decide_request"}
    calls.clear()
    dlog = DecisionLog(str(tmp_path / "decisions.log"), sample=0.0)
    try:
        logged, logged_calls = await served_by(dlog)
    finally:
        dlog.close()
    assert logged_calls == [0, 0] and logged == native
    with serve_process(tmp_path, env={"CONSENT_CORE_PURE": "1"}) as sc:
        sc.wait_started()
        async with grpc.aio.insecure_channel(sc.tcp) as channel:
            pure, _ = await _answers(channel, [])
    assert pure == native
