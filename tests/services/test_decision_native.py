"""The native DecideBatch (consent_core._native.decide_batch) answers byte for byte as the Python path, or declines.

The oracle is the server's own Python path (`DecisionService._decide_batch` with no native table),
run in-process on the same snapshot: for random mappings and random batches encoded with the
generated stubs, the native answer is None or the very same bytes, and for plain batches (consent
or none, explain false, valid ASCII ids within the limits) it must not be None. Mutated, truncated
and random bytes must never crash it: where the Python path fails (DecodeError, too many entries),
the native one declines. tests/services/test_decision_bytes.py compares the served bytes over real
gRPC with the native path on. With metrics (`decide_batch_counted`), the counts by reason and
outcome equal what the Python path's Recorder holds after the same batch, and the flushed
consent_sidecar_* samples are the same on both paths.
"""

from __future__ import annotations

import random
import sys
import tracemalloc
from collections.abc import Coroutine
from typing import Any

import grpc
import pytest
from consent.v1 import decision_pb2
from consent_core.index import compile
from consent_core.limits import Limits
from consent_core.model import ConsentMapping
from consent_core.native import NATIVE
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent_sidecar.services.answers import Served
from consent_sidecar.services.decision import DecisionService
from consent_sidecar.store.policy import PolicyStore
from tests.core.test_index import _SHARED, CATEGORY_IDS, REQUESTABLE, mappings

pytestmark = pytest.mark.skipif(NATIVE is None, reason="consent_core._native not built or CONSENT_CORE_PURE=1")

Req = decision_pb2.DecideRequest
Batch = decision_pb2.DecideBatchRequest

LIMITS = Limits(max_destinations=6, max_batch=5, max_destination_id_bytes=10)
# Ids the Python path rejects or that the C leaves to it (non-ASCII), beside valid ones.
ODD_IDS = ["", "/amp", "x" * 11, "x" * 10, "é", "a\x00", "amp\u200b", "a b", "~"]
KEYS = [*CATEGORY_IDS, "C0004", "", "é", "a\x01", "a b"]


# _SHARED without its shadow categories.
NO_SHADOW = ConsentMapping(
    tuple(c for c in _SHARED.mapping.categories if not c.shadow), _SHARED.mapping.destinations,
    _SHARED.mapping.settings,
)


class Aborted(Exception):
    """context.abort, in-process."""


class Context:
    def invocation_metadata(self) -> tuple[()]:
        return ()

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)


def _run(coro: Coroutine[Any, Any, bytes]) -> bytes:
    """The handler's coroutine, run to its end (nothing in it waits on I/O)."""
    try:
        coro.send(None)
    except StopIteration as e:
        return e.value  # type: ignore[no-any-return]
    raise AssertionError("the handler suspended")


class Pair:
    """One snapshot served by the Python path (with metrics when `counted`), and its native table."""

    def __init__(self, mapping: ConsentMapping, limits: Limits = LIMITS, *, counted: bool = False) -> None:
        from consent_sidecar.observe.metrics import Metrics, Recorder

        store = PolicyStore()
        store.publish(compile(mapping), source="test")
        self.recorder = Recorder(Metrics()) if counted else None
        self.service = DecisionService(store, limits, recorder=self.recorder)
        served = self.service._served()
        self.table = served.batch_table
        served.batch_table = None  # the service answers in Python from now on
        assert self.table is not None

    def python(self, data: bytes) -> bytes | Exception:
        try:
            return _run(self.service._decide_batch(data, Context()))  # type: ignore[arg-type]
        except (DecodeError, Aborted) as e:
            return e

    def native(self, data: bytes) -> bytes | None:
        assert NATIVE is not None
        out: bytes | None = NATIVE.decide_batch(self.table, data)
        return out

    def check(self, data: bytes) -> bytes | None:
        """The native answer, having checked it is None or the Python path's bytes."""
        got = self.native(data)
        if got is not None:
            assert got == self.python(data)
        return got


def _request(draw: st.DrawFn, plain: bool) -> Req:
    ids = st.sampled_from(REQUESTABLE) if plain else st.sampled_from([*REQUESTABLE, *ODD_IDS])
    r = Req(destinations=draw(st.lists(ids, max_size=LIMITS.max_destinations if plain else 8)))
    source = draw(st.sampled_from(["none", "consent"] if plain else ["none", "consent", "event"]))
    if source == "consent":
        keys = st.sampled_from([*CATEGORY_IDS, "C0004"] if plain else KEYS)
        r.consent.SetInParent()  # present even when empty
        r.consent.category_preferences.update(draw(st.dictionaries(keys, st.booleans())))
    elif source == "event":
        r.segment_event = b'{"type":"track","event":"x"}'
    if not plain:
        r.explain = draw(st.booleans())
    return r


@st.composite
def batches(draw: st.DrawFn, plain: bool) -> bytes:
    n = draw(st.integers(0, LIMITS.max_batch if plain else LIMITS.max_batch + 2))
    return Batch(requests=[_request(draw, plain) for _ in range(n)]).SerializeToString()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mappings(), batches(plain=True))
def test_plain_batches_are_decided_natively_as_the_python_path(mapping: ConsentMapping, data: bytes) -> None:
    assert Pair(mapping).check(data) is not None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mappings(), batches(plain=False))
def test_any_batch_is_declined_or_decided_as_the_python_path(mapping: ConsentMapping, data: bytes) -> None:
    Pair(mapping).check(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mappings(), batches(plain=True), st.data())
def test_mutated_and_truncated_batches_are_declined_or_decided_as_the_python_path(
    mapping: ConsentMapping, data: bytes, draw: st.DataObject
) -> None:
    b = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 4))):
        what = draw.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        at = draw.draw(st.integers(0, len(b)))
        if what == "flip" and at < len(b):
            b[at] = draw.draw(st.integers(0, 255))
        elif what == "insert":
            b[at:at] = draw.draw(st.binary(min_size=1, max_size=3))
        elif what == "delete":
            del b[at : at + 1]
        else:
            del b[at:]
    pair = Pair(mapping)
    got = pair.native(bytes(b))
    if got is not None:  # what the C decides protobuf parses, and the Python path answers the same
        assert got == pair.python(bytes(b))


def _encoded_consent(*entries: bytes) -> bytes:
    """A DecideRequest whose consent holds these raw map entries (field 1 of Consent each)."""
    body = b"".join(b"\x0a" + bytes([len(e)]) + e for e in entries)
    return b"\x0a" + bytes([len(body)]) + body


def _entry(request: bytes) -> bytes:
    return b"\x0a" + bytes([len(request)]) + request


def _key(k: bytes, v: int | None = None) -> bytes:
    return b"\x0a" + bytes([len(k)]) + k + (b"" if v is None else b"\x10" + bytes([v]))


SHAPES = [
    # (name, request bytes, whether the C decides it)
    ("a key granted then denied: the last value wins", _encoded_consent(_key(b"C0001", 1), _key(b"C0001", 0)), True),
    ("a key denied then granted", _encoded_consent(_key(b"C0001", 0), _key(b"C0001", 1)), True),
    ("a map entry without its value is false", _encoded_consent(_key(b"C0001")), True),
    ("a map entry without its key is the empty id", _encoded_consent(b"\x10\x01"), True),
    ("a bool encoded as 2 is true", _encoded_consent(_key(b"C0001", 2)), True),
    ("value before key", _encoded_consent(b"\x10\x01" + _key(b"C0001")[0:7]), True),
    ("explain false spelled out", b"\x1a\x03amp\x20\x00", True),
    ("explain true", b"\x1a\x03amp\x20\x01", False),
    ("no destinations: every known one", _encoded_consent(_key(b"C0002", 1)), True),
    ("an empty consent object", b"\x0a\x00\x1a\x03amp", True),
    ("two consent fields merge", _encoded_consent(_key(b"C0001", 1)) + _encoded_consent(_key(b"C0002", 1)), True),
    ("an instance decides as its destination", b"\x0a\x00\x1a\x06amp/eu", True),
    ("an id of exactly the byte limit", b"\x1a\x0a" + b"x" * 10, True),
    ("an id one byte over", b"\x1a\x0b" + b"x" * 11, False),
    ("a segment event", b"\x12\x02{}", False),
    ("consent then segment event", b"\x0a\x00\x12\x02{}", False),
    ("an unknown field", b"\x1a\x03amp\x28\x01", False),
    ("destinations with the wrong wire type", b"\x18\x01", False),
    ("a non-ASCII id", b"\x1a\x02\xc3\xa9", False),
    ("invalid UTF-8", b"\x1a\x01\xff", False),
    ("a control character in a key", _encoded_consent(_key(b"a\x01", 1)), False),
    ("a varint of 11 bytes", b"\x20" + b"\x80" * 10 + b"\x00", False),
    ("a length past the end", b"\x1a\x7famp", False),
]



@pytest.mark.parametrize(("name", "request_", "native"), SHAPES, ids=[s[0] for s in SHAPES])
def test_wire_shapes_are_decided_as_the_python_path_or_declined(name: str, request_: bytes, native: bool) -> None:
    got = Pair(_SHARED.mapping).check(_entry(request_) + _entry(b"\x1a\x03amp"))
    assert (got is not None) == native


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("too many entries", _entry(b"\x1a\x03amp") * (LIMITS.max_batch + 1)),
        ("too many destinations", _entry(b"\x1a\x03amp" * (LIMITS.max_destinations + 1))),
        ("a batch field other than requests", b"\x12\x00"),
        ("an entry truncated", _entry(b"\x1a\x03amp")[:-1]),
    ],
)
def test_what_the_python_path_refuses_is_declined(name: str, data: bytes) -> None:
    assert Pair(_SHARED.mapping).native(data) is None


@pytest.mark.parametrize("kind", ["batch", "request"])
def test_random_bytes_never_crash_it(kind: str) -> None:
    """decide_batch over batches, decide_request over single requests (test_decision_native_request.py's oracle)."""
    from tests.services.test_decision_native_request import One

    pair: Pair = Pair(_SHARED.mapping) if kind == "batch" else One(_SHARED.mapping)
    rng = random.Random(16)
    request = Req(destinations=["amp", "ga4/eu"], consent=decision_pb2.Consent(category_preferences={"C0001": True}))
    plain = Batch(requests=[request] * 3).SerializeToString() if kind == "batch" else request.SerializeToString()
    decided = 0
    for i in range(20_000):
        if i % 2:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(64)))
        else:  # mostly-valid bytes reach deeper
            b = bytearray(plain)
            b[rng.randrange(len(b))] = rng.getrandbits(8)
            data = bytes(b[: rng.randrange(len(b) + 1)])
        got = pair.native(data)
        decided += got is not None
        if got is not None and i % 20 == 0:
            assert got == pair.python(data)
    assert decided > 0


@pytest.mark.parametrize("kind", ["batch", "request"])
@pytest.mark.parametrize("counted", [False, True])
def test_calls_leave_reference_counts_and_memory_as_they_were(counted: bool, kind: str) -> None:
    assert NATIVE is not None
    pair = Pair(NO_SHADOW if counted else _SHARED.mapping)
    consent = decision_pb2.Consent(category_preferences={"C0001": True})
    request = Req(destinations=["amp", "ads", "x/y"], consent=consent)
    if kind == "batch":
        call = NATIVE.decide_batch_counted if counted else NATIVE.decide_batch
        data = Batch(requests=[request] * 5).SerializeToString()
    else:
        call = NATIVE.decide_request_counted if counted else NATIVE.decide_request
        data = request.SerializeToString()
    bad = data[:-3]
    before = sys.getrefcount(data), sys.getrefcount(bad), sys.getrefcount(pair.table)
    tracemalloc.start()
    try:
        grown = []
        for _ in range(2):  # the first round under tracing refills free lists with traced blocks
            start = tracemalloc.get_traced_memory()[0]
            for _ in range(10_000):
                assert call(pair.table, data) is not None
                assert call(pair.table, bad) is None
            grown.append(tracemalloc.get_traced_memory()[0] - start)
    finally:
        tracemalloc.stop()
    assert grown[1] < 10_000  # bytes, over 20,000 calls
    assert (sys.getrefcount(data), sys.getrefcount(bad), sys.getrefcount(pair.table)) == before


def test_the_server_takes_the_native_path_with_metrics_but_not_with_the_decision_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any,
) -> None:
    from consent_sidecar.observe.decision_log import DecisionLog
    from consent_sidecar.observe.metrics import Metrics, Recorder
    from consent_sidecar.services import native_path

    calls: list[object] = []
    real, real_counted = native_path.decide_batch, native_path.decide_batch_counted
    assert real is not None and real_counted is not None

    def spy(table: object, data: bytes) -> bytes | None:
        calls.append(out := real(table, data))
        return out

    def spy_counted(table: object, data: bytes) -> Counts | None:
        calls.append(out := real_counted(table, data))
        return out

    monkeypatch.setattr(native_path, "decide_batch", spy)
    monkeypatch.setattr(native_path, "decide_batch_counted", spy_counted)
    store = PolicyStore()
    store.publish(compile(NO_SHADOW), source="test")
    data = Batch(requests=[Req(destinations=["amp"])]).SerializeToString()
    lean = _run(DecisionService(store, LIMITS)._decide_batch(data, Context()))  # type: ignore[arg-type]
    assert calls == [lean]
    calls.clear()
    counted = _run(DecisionService(store, LIMITS, recorder=Recorder(Metrics()))._decide_batch(
        data, Context()))  # type: ignore[arg-type]
    assert counted == lean and len(calls) == 1 and isinstance(calls[0], tuple) and calls[0][0] == lean
    calls.clear()
    dlog = DecisionLog(str(tmp_path / "log"), sample=0.0)
    try:
        logged = _run(DecisionService(store, LIMITS, recorder=Recorder(Metrics()), decision_log=dlog)._decide_batch(
            data, Context()))  # type: ignore[arg-type]
    finally:
        dlog.close()
    assert not calls and logged == lean
    store.publish(_SHARED, source="test")  # shadow categories: counted natively too
    shadowed = _run(DecisionService(store, LIMITS, recorder=Recorder(Metrics()))._decide_batch(
        data, Context()))  # type: ignore[arg-type]
    assert len(calls) == 1 and isinstance(calls[0], tuple) and calls[0][0] == shadowed


def test_a_mapping_of_more_categories_than_64_bits_has_no_native_table() -> None:
    from consent_core.model import Category

    categories = tuple(Category(f"c{i}", f"n{i}", ("amp",)) for i in range(70))
    store = PolicyStore()
    store.publish(compile(ConsentMapping(categories)), source="test")
    assert Served(store.current, LIMITS).batch_table is None


# -- decide_batch_counted: the decision counts the metrics take ------------------------------------


def _recorded(rec: Any) -> tuple[dict[int, int], dict[tuple[str, str], int]]:
    """What a Recorder holds before its flush: decisions by slot (Tallies and native counts) and shadow."""
    slots = {s: c for s, c in enumerate(rec.slots) if c}
    shadow: dict[tuple[str, str], int] = {}
    for t, n in rec.pending.items():
        for slot, c in t.reasons:
            slots[slot] = slots.get(slot, 0) + c * n
        for cat, dest, c in t.shadow:
            shadow[cat, dest] = shadow.get((cat, dest), 0) + c * n
    return slots, shadow


Counts = tuple[bytes, int, tuple[int, ...], tuple[tuple[str, str, int], ...]]


class Counted(Pair):
    """One snapshot served with metrics by the Python path, and its native table."""

    def __init__(self, mapping: ConsentMapping) -> None:
        super().__init__(mapping, counted=True)

    def check(self, data: bytes) -> Counts | None:
        """The native counted answer, having checked it is None or the Python path's bytes and counts."""
        assert NATIVE is not None
        got: Counts | None = NATIVE.decide_batch_counted(self.table, data)
        if got is None:
            return None
        body, n, counts, shadow_counts = got
        rec = self.recorder
        assert rec is not None
        assert body == _run(self.service._decide_batch(data, Context()))  # type: ignore[arg-type]
        slots, shadow = _recorded(rec)
        assert {s: c for s, c in enumerate(counts) if c} == slots
        assert {(cat, dest): c for cat, dest, c in shadow_counts} == shadow
        assert len({(cat, dest) for cat, dest, _ in shadow_counts}) == len(shadow_counts)
        assert sum(rec.batch.counts) == 1 and rec.batch.total == n and rec.errors["DecideBatch"] == 0
        return got


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mappings(), batches(plain=True))
def test_native_counts_are_the_python_paths_tallies(mapping: ConsentMapping, data: bytes) -> None:
    assert Counted(mapping).check(data) is not None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mappings(), batches(plain=False))
def test_native_counts_of_any_batch_are_the_python_paths_or_declined(mapping: ConsentMapping, data: bytes) -> None:
    got = Counted(mapping).check(data)
    if got is not None:
        assert NATIVE is not None and got[0] == NATIVE.decide_batch(Counted(mapping).table, data)


def test_each_reason_is_counted_in_its_slot() -> None:
    from consent_core.model import Category, DestinationSettings, Settings, UnknownDestinations
    from consent_core.outcome import Reason

    from consent_sidecar.observe.metrics import _slot

    mapping = ConsentMapping(
        (
            Category("C0001", "a", ("amp", "ga4")),
            Category("C0002", "b", ("ads",), enabled=False),
            Category("C0003", "c", ("hub",)),
        ),
        {"ga4": DestinationSettings(enforce=False)},
        Settings(UnknownDestinations.DENY),
    )
    pair = Counted(mapping)
    consent = Req(destinations=["amp", "ga4", "ads", "hub", "ghost", "amp/eu"])
    consent.consent.category_preferences.update({"C0001": True})
    data = Batch(requests=[consent, Req(destinations=["amp", "ghost"])]).SerializeToString()
    got = pair.check(data)
    assert got is not None
    expected = {
        _slot(Reason.GRANTED, True): 2, _slot(Reason.EXEMPT, True): 1, _slot(Reason.UNMAPPED, True): 1,
        _slot(Reason.DENIED, False): 1, _slot(Reason.UNKNOWN_DESTINATION, False): 1,
        _slot(Reason.NO_CONSENT, True): 2,
    }
    assert {s: c for s, c in enumerate(got[2]) if c} == expected


@pytest.mark.parametrize("shadow", [False, True])
def test_metrics_after_batches_are_the_same_on_both_paths(shadow: bool) -> None:
    """The consent_sidecar_* samples after the same batches, native (with its counts) and Python."""
    from consent_sidecar.observe.metrics import Metrics, Recorder

    store = PolicyStore()
    store.publish(_SHARED if shadow else compile(NO_SHADOW), source="test")
    rng = random.Random(16)
    plain = [_random_request(rng) for _ in range(40)]
    batches_ = [Batch(requests=rng.sample(plain, rng.randint(0, 5))).SerializeToString() for _ in range(60)]
    bad = Batch(requests=[Req(destinations=["/amp"]), Req(destinations=["amp"])]).SerializeToString()
    samples = []
    for native in (True, False):
        rec = Recorder(Metrics())
        service = DecisionService(store, LIMITS, recorder=rec)
        if not native:
            service._served().batch_table = None
        for data in [*batches_, bad, *batches_]:
            _run(service._decide_batch(data, Context()))  # type: ignore[arg-type]
        native_counted = any(rec.slots)
        rec.flush()
        got = {
            (m.name, s.name, tuple(sorted(s.labels.items()))): s.value
            for m in rec.metrics.registry.collect() for s in m.samples
            # Not the memos' sizes (the native path fills none) nor durations beyond their count.
            if not s.name.endswith("_created") and not s.name.startswith("consent_sidecar_memo_")
            and (not s.name.startswith("consent_sidecar_rpc_duration_seconds_")
                 or s.name == "consent_sidecar_rpc_duration_seconds_count")
        }
        assert native_counted == native  # the native path did take the batches
        samples.append(got)
    assert samples[0] == samples[1]
    decided = {k: v for k, v in samples[0].items() if k[0] == "consent_sidecar_decisions"}
    assert sum(decided.values()) > 100
    would_block = [v for k, v in samples[0].items() if k[0] == "consent_sidecar_shadow_would_block"]
    assert bool(would_block) == shadow and all(would_block)



def _random_request(rng: random.Random) -> Req:
    r = Req(destinations=rng.sample(REQUESTABLE, rng.randint(0, LIMITS.max_destinations)))
    if rng.random() < 0.8:
        r.consent.SetInParent()
        r.consent.category_preferences.update({k: rng.random() < 0.5 for k in rng.sample(CATEGORY_IDS, 3)})
    return r


def test_shadow_would_block_counts_follow_the_explained_rules() -> None:
    from consent_core.model import Category, DestinationSettings, Resolution

    mapping = ConsentMapping(
        (
            Category("C0001", "a", ("amp", "hub")),
            Category("Perf", "dry", ("amp", "ga4", "ads", "braze", "hub"), shadow=True),
            Category("C0004", "dry 2", ("braze", "ads"), shadow=True),
        ),
        {
            "ga4": DestinationSettings(enforce=False),  # exempt: never counts
            "braze": DestinationSettings(resolution=Resolution.ANY),  # any, only shadow: none granted counts
            "hub": DestinationSettings(resolution=Resolution.ANY),  # any with a required category: never
        },
    )
    pair = Counted(mapping)
    granted = Req(destinations=["amp", "ga4", "ads", "braze", "hub", "amp/eu"])
    granted.consent.category_preferences.update({"C0001": True, "C0004": True})
    none = Req(destinations=["amp", "braze"])
    none.consent.SetInParent()
    data = Batch(requests=[granted, none, Req(destinations=["amp"])]).SerializeToString()
    got = pair.check(data)
    assert got is not None
    assert sorted(got[3]) == [("C0004", "braze", 1), ("Perf", "ads", 1), ("Perf", "amp", 2), ("Perf", "braze", 1)]
