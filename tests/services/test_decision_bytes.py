"""The bytes handlers (memoised, pre-encoded responses) answer byte for byte as the plain protobuf path.

The oracle is `PlainDecisionService` below: the straightforward servicer (parse with the
generated deserializers, `decide_one`, build a response message, let gRPC serialize it), as the
service was before the fast path. Both run side by side on one PolicyStore; a raw channel sends
the same request bytes to each and compares the response bytes (or status and message), twice
over so that memo misses and memo hits are both compared.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from consent.v1 import decision_pb2, decision_pb2_grpc
from consent_core.errors import InvalidArgument
from consent_core.event import decide_one
from consent_core.index import Index, Outcome
from consent_core.index import compile as compile_index
from consent_core.limits import Limits
from consent_core.model import Category
from hypothesis import given, settings
from hypothesis import strategies as st

from consent_sidecar.observe.metrics import Metrics, Recorder
from consent_sidecar.services import decision
from consent_sidecar.services.status import abort
from consent_sidecar.store.policy import PolicyStore

Req = decision_pb2.DecideRequest
Batch = decision_pb2.DecideBatchRequest

MAPPING = """\
version: 1
settings:
  unknown_destinations: deny
categories:
  - id: C0002
    name: Performance Cookies
    destinations: [amplitude, mixpanel]
  - id: C0004
    name: Targeting Cookies
    destinations: [google-ads, braze, mixpanel]
  - id: C0003
    name: Functional Cookies
    shadow: true
    destinations: [amplitude, hotjar, braze]
  - id: C0005
    name: Retired
    enabled: false
    destinations: [amplitude, retired-tool]
destinations:
  aws-s3: {enforce: false}
  braze: {resolution: any}
  settings-only: {}
"""

LIMITS = Limits(max_destinations=8, max_batch=12, max_event_depth=6, max_destination_id_bytes=40)


# -- the oracle: the plain protobuf path --------------------------------------------------------


def _plain_decide(index: Index, limits: Limits, request: decision_pb2.DecideRequest, field: str) -> Outcome:
    destinations = list(request.destinations)
    source = request.WhichOneof("source")
    if source is None:
        return decide_one(index, limits, destinations, explain=request.explain, field=field)
    if source == "consent":
        prefs = dict(request.consent.category_preferences.items())
        return decide_one(index, limits, destinations, preferences=prefs, explain=request.explain, field=field)
    return decide_one(
        index, limits, destinations, segment_event=request.segment_event, explain=request.explain, field=field
    )


def _plain_fill(msg: decision_pb2.DecideResponse, outcome: Outcome, policy: decision_pb2.PolicyVersion) -> None:
    msg.allowed.extend(outcome.allowed)
    msg.blocked.extend(outcome.blocked)
    for d in outcome.decisions or ():
        msg.decisions.add(
            destination=d.destination, allowed=d.allowed, reason=int(d.reason),
            required_categories=d.required_categories, missing_categories=d.missing_categories,
            shadow_missing_categories=d.shadow_missing_categories,
        )
    msg.policy.CopyFrom(policy)


class PlainDecisionService(decision_pb2_grpc.DecisionServiceServicer):
    def __init__(self, store: PolicyStore, limits: Limits) -> None:
        self.store = store
        self.limits = limits

    def _version(self) -> tuple[Index, decision_pb2.PolicyVersion]:
        snap = self.store.current
        return snap.index, decision_pb2.PolicyVersion(generation=snap.generation, digest=snap.digest)

    async def Decide(self, request: Any, context: Any) -> decision_pb2.DecideResponse:
        index, version = self._version()
        try:
            outcome = _plain_decide(index, self.limits, request, "")
        except InvalidArgument as e:
            await abort(context, e)
        response = decision_pb2.DecideResponse()
        _plain_fill(response, outcome, version)
        return response

    async def DecideBatch(self, request: Any, context: Any) -> decision_pb2.DecideBatchResponse:
        n = len(request.requests)
        if n > self.limits.max_batch:
            await abort(context, InvalidArgument("requests", f"too many entries: {n} > {self.limits.max_batch}"))
        index, version = self._version()
        response = decision_pb2.DecideBatchResponse()
        for i, entry in enumerate(request.requests):
            msg = response.responses.add()
            try:
                outcome = _plain_decide(index, self.limits, entry, f"requests[{i}].")
            except InvalidArgument as e:
                msg.error = str(e)
                continue
            _plain_fill(msg, outcome, version)
        response.policy.CopyFrom(version)
        return response

    async def DecideStream(self, request_iterator: Any, context: Any) -> AsyncIterator[decision_pb2.DecideResponse]:
        async for request in request_iterator:
            index, version = self._version()
            response = decision_pb2.DecideResponse()
            try:
                outcome = _plain_decide(index, self.limits, request, "")
            except InvalidArgument as e:
                response.error = str(e)
            else:
                _plain_fill(response, outcome, version)
            yield response


# -- fixtures ---------------------------------------------------------------------------------------


class Pair:
    """The plain and the fast server on one store, called with raw bytes."""

    def __init__(self, plain: grpc.aio.Channel, fast: grpc.aio.Channel, store: PolicyStore) -> None:
        self.channels = {"plain": plain, "fast": fast}
        self.store = store

    async def unary(self, method: str, data: bytes) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, ch in self.channels.items():
            call = ch.unary_unary(f"/consent.v1.DecisionService/{method}")
            try:
                out[name] = await call(data, timeout=10)
            except grpc.aio.AioRpcError as e:
                out[name] = (e.code(), e.details())
        return out

    async def stream(self, messages: list[bytes]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, ch in self.channels.items():
            call = ch.stream_stream("/consent.v1.DecisionService/DecideStream")(timeout=10)
            got: list[Any] = []
            try:
                for m in messages:
                    await call.write(m)
                    got.append(await call.read())
                await call.done_writing()
            except grpc.aio.AioRpcError as e:
                got.append((e.code(), e.details()))
            out[name] = got
        return out


class MemosOffService(decision.DecisionService):
    """The fast server as it runs under traffic that never repeats: every memo stepped aside."""

    def _served(self) -> Any:
        st = super()._served()
        for memo in (st.raw, st.answers, st.consent):
            memo.off = True
            memo.countdown = 1 << 62  # never a sampled call
        return st


@pytest.fixture(params=["metrics", "lean", "memos off"])
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Pair]:
    """The fast server with metrics (every answer explained for its tally), without (the plain
    pass and pre-encoded pieces), and with its memos off (batches parsed at once)."""
    path = tmp_path / "mappings.yaml"
    path.write_text(MAPPING)
    store = PolicyStore()
    store.load_initial(str(path))
    servers = []
    channels = []
    fast = {
        "metrics": lambda: decision.DecisionService(store, LIMITS, recorder=Recorder(Metrics())),
        "lean": lambda: decision.DecisionService(store, LIMITS),
        "memos off": lambda: MemosOffService(store, LIMITS),
    }[request.param]
    for register in (
        lambda s: decision_pb2_grpc.add_DecisionServiceServicer_to_server(PlainDecisionService(store, LIMITS), s),
        lambda s: decision.add_to_server(fast(), s),
    ):
        server = grpc.aio.server()
        register(server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        channels.append(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
    try:
        yield Pair(channels[0], channels[1], store)
    finally:
        for ch in channels:
            await ch.close()
        for s in servers:
            await s.stop(None)


def _event(**fields: Any) -> bytes:
    return json.dumps({"type": "track", "event": "Order Completed", **fields}).encode()


def _prefs_event(prefs: dict[str, Any], **fields: Any) -> bytes:
    return _event(context={"consent": {"categoryPreferences": prefs}}, **fields)


def _consent(**prefs: bool) -> decision_pb2.Consent:
    return decision_pb2.Consent(category_preferences=prefs)


ALL = ["amplitude", "mixpanel", "google-ads", "braze", "hotjar", "aws-s3", "settings-only", "retired-tool"]

REQUESTS: list[tuple[str, decision_pb2.DecideRequest]] = [
    ("no consent object", Req(destinations=ALL)),
    ("no consent object, explain", Req(destinations=ALL, explain=True)),
    ("empty consent object", Req(consent=_consent(), destinations=ALL, explain=True)),
    ("granted some", Req(consent=_consent(C0002=True, C0004=False), destinations=ALL)),
    ("granted some, explain", Req(consent=_consent(C0002=True, C0004=False), destinations=ALL, explain=True)),
    ("granted all incl. shadow", Req(consent=_consent(C0002=True, C0003=True, C0004=True), explain=True)),
    ("unknown category ids ignored", Req(consent=_consent(X=True, c0002=True), destinations=["amplitude"])),
    ("every known destination", Req(consent=_consent(C0004=True))),
    ("every known destination, explain", Req(consent=_consent(C0004=True), explain=True)),
    ("duplicates", Req(consent=_consent(C0002=True), destinations=["amplitude", "braze", "amplitude", "braze"],
                       explain=True)),
    ("instances", Req(consent=_consent(C0004=True), destinations=["google-ads/eu", "amplitude/us", "aws-s3/x",
                                                                  "nobody/x"], explain=True)),
    ("unknown destination denied", Req(consent=_consent(C0002=True), destinations=["nobody", "amplitude"],
                                       explain=True)),
    ("unknown destination, no consent", Req(destinations=["nobody"], explain=True)),
    ("segment event with integrations", Req(
        segment_event=_prefs_event({"C0002": True, "C0004": True}, integrations={"mixpanel": False, "braze": {"x": 1}}),
        destinations=["amplitude", "mixpanel", "google-ads", "braze"], explain=True)),
    ("segment event All false", Req(
        segment_event=_event(integrations={"All": False, "amplitude": True, "aws-s3": {}}),
        destinations=["amplitude", "aws-s3", "mixpanel"])),
    ("segment event empty integrations", Req(
        segment_event=_prefs_event({"C0002": True}, integrations={}), destinations=ALL, explain=True)),
    ("segment event no consent", Req(segment_event=_event(), destinations=["google-ads"], explain=True)),
    ("preference event", Req(segment_event=json.dumps({
        "type": "track", "event": "Segment Consent Preference Updated",
        "context": {"consent": {"categoryPreferences": {"C0002": False}}}, "integrations": {"mixpanel": False},
    }).encode(), destinations=["amplitude", "mixpanel", "google-ads"], explain=True)),
    ("preference event, no explain", Req(segment_event=json.dumps({
        "type": "track", "event": "Segment Consent Preference Updated",
    }).encode(), destinations=["amplitude"])),
    # invalid entries
    ("empty destination id", Req(destinations=["amplitude", ""])),
    ("long destination id", Req(consent=_consent(), destinations=["x" * 41])),
    ("too many destinations", Req(destinations=["a"] * 9)),
    ("leading slash", Req(destinations=["/x"])),
    ("bad json", Req(segment_event=b"{not json", destinations=["a"])),
    ("too deep", Req(segment_event=b'{"a": ' + b"[" * 8 + b"]" * 8 + b"}")),
    ("bad preferences", Req(segment_event=_prefs_event({"C0002": "yes"}))),
    ("destinations checked before the event", Req(segment_event=b"{", destinations=[""])),
    ("non-object integrations", Req(segment_event=_event(integrations=[1]))),
]


def _ids(cases: list[tuple[str, Any]]) -> list[str]:
    return [name for name, _ in cases]


# -- unary ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "request_"), REQUESTS, ids=_ids(REQUESTS))
async def test_decide_bytes_equal_the_plain_path(pair: Pair, name: str, request_: decision_pb2.DecideRequest) -> None:
    data = request_.SerializeToString()
    for _ in range(3):  # a miss, then hits
        got = await pair.unary("Decide", data)
        assert got["fast"] == got["plain"], name


async def test_decide_bytes_follow_a_new_snapshot(pair: Pair) -> None:
    data = Req(consent=_consent(C0002=True), destinations=ALL, explain=True).SerializeToString()
    before = await pair.unary("Decide", data)
    old = pair.store.current.index.mapping
    changed = old.with_categories(
        [*old.categories, Category("C0009", "New", ("amplitude",))]
    )
    assert pair.store.publish(compile_index(changed)) is not None
    after = await pair.unary("Decide", data)
    assert after["fast"] == after["plain"]
    assert after["fast"] != before["fast"]  # C0009 is not granted: amplitude is now blocked, generation 2
    assert decision_pb2.DecideResponse.FromString(after["fast"]).policy.generation == 2


@pytest.mark.parametrize(
    "data",
    [b"\xff\xff", b"\x1a\x02\xff\xfe", Req(destinations=["a"]).SerializeToString() + b"\x28\x01\x38\x05"],
    ids=["corrupt", "bad-utf8", "unknown-fields"],
)
async def test_malformed_or_unusual_encodings_answer_as_the_plain_path(pair: Pair, data: bytes) -> None:
    for method in ("Decide", "DecideBatch"):
        for _ in range(2):
            got = await pair.unary(method, data)
            assert got["fast"] == got["plain"], method


async def test_another_encoding_of_the_same_request_gets_the_same_bytes(pair: Pair) -> None:
    a = Req(consent=_consent(C0002=True, C0004=False), destinations=["amplitude", "braze"])
    # The same message with its fields in another order (protobuf parsers accept any order).
    b = (Req(destinations=["amplitude", "braze"]).SerializeToString()
         + Req(consent=_consent(C0004=False, C0002=True)).SerializeToString())
    assert Req.FromString(b) == a
    first = await pair.unary("Decide", a.SerializeToString())
    second = await pair.unary("Decide", b)
    assert first["fast"] == second["fast"] == second["plain"]


# -- batch ---------------------------------------------------------------------------------------------


def _batches() -> list[tuple[str, bytes]]:
    reqs = [r for _, r in REQUESTS]
    valid_and_invalid = [reqs[i : i + 10] for i in range(0, len(reqs), 10)]
    out = [(f"mixed {i}", Batch(requests=b).SerializeToString()) for i, b in enumerate(valid_and_invalid)]
    out.append(("empty", Batch().SerializeToString()))
    out.append(("one", Batch(requests=[reqs[4]]).SerializeToString()))
    out.append(("too many", Batch(requests=[reqs[0]] * 13).SerializeToString()))
    out.append(("at the limit", Batch(requests=[reqs[3]] * 12).SerializeToString()))
    big = Req(consent=_consent(C0002=True), destinations=["d" * 39 + str(i % 10) for i in range(8)], explain=True)
    out.append(("entries over 127 bytes", Batch(requests=[big, reqs[1], big]).SerializeToString()))
    out.append(("unknown batch field", Batch(requests=[reqs[3]]).SerializeToString() + b"\x1a\x02ab"))
    out.append(("empty entry", b"\x0a\x00"))
    out.append(("truncated", Batch(requests=[reqs[3]]).SerializeToString()[:-3]))
    out.append(("too many and malformed", Batch(requests=[reqs[0]] * 13).SerializeToString() + b"\x0a\x02\xff\xff"))
    bad_entry = Batch(requests=[reqs[3]]).SerializeToString() + b"\x0a\x04\x1a\x02\xff\xfe"
    out.append(("an entry with bad UTF-8", bad_entry))
    return out


BATCHES = _batches()


@pytest.mark.parametrize(("name", "data"), BATCHES, ids=_ids(BATCHES))
async def test_decide_batch_bytes_equal_the_plain_path(pair: Pair, name: str, data: bytes) -> None:
    for _ in range(3):
        got = await pair.unary("DecideBatch", data)
        assert got["fast"] == got["plain"], name


# -- stream --------------------------------------------------------------------------------------------


async def test_decide_stream_bytes_equal_the_plain_path(pair: Pair) -> None:
    messages = [r.SerializeToString() for _, r in REQUESTS] * 2
    got = await pair.stream(messages)
    assert len(got["fast"]) == len(messages)
    assert got["fast"] == got["plain"]


async def test_a_malformed_stream_message_ends_the_stream_as_the_plain_path(pair: Pair) -> None:
    messages = [REQUESTS[3][1].SerializeToString(), b"\xff\xff", REQUESTS[3][1].SerializeToString()]
    got = await pair.stream(messages)
    assert got["fast"] == got["plain"]
    assert got["fast"][-1][0] == grpc.StatusCode.UNKNOWN


# -- the wire-format pieces ------------------------------------------------------------------------------

_ids_st = st.text(alphabet="abcdefgh-/é", min_size=1, max_size=60)
_requests_st = st.builds(
    Req,
    destinations=st.lists(_ids_st, max_size=12),
    explain=st.booleans(),
    consent=st.none() | st.builds(
        lambda d: decision_pb2.Consent(category_preferences=d),
        st.dictionaries(st.sampled_from(["C0002", "C0003", "C0004", "x"]), st.booleans()),
    ),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_requests_st, max_size=20))
def test_split_batch_returns_each_entry_encoding(requests: list[decision_pb2.DecideRequest]) -> None:
    data = Batch(requests=requests).SerializeToString()
    entries = decision.split_batch(data)
    assert entries is not None
    assert [Req.FromString(e) for e in entries] == requests
    assert b"".join(decision._field(b"\x0a", e) for e in entries) == data


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_ids_st, max_size=30), max_size=20), st.integers(1, 2**40), st.text(max_size=70))
def test_concatenated_fields_equal_protobufs_encoding(
    lists: list[list[str]], generation: int, digest: str
) -> None:
    policy = decision_pb2.PolicyVersion(generation=generation, digest=digest)
    responses = [decision_pb2.DecideResponse(allowed=ids, blocked=ids[:2], policy=policy) for ids in lists]
    want = decision_pb2.DecideBatchResponse(responses=responses, policy=policy).SerializeToString()
    got = b"".join(decision._field(b"\x0a", r.SerializeToString()) for r in responses)
    got += decision._field(b"\x12", policy.SerializeToString())
    assert got == want


def test_split_batch_declines_what_it_does_not_parse() -> None:
    assert decision.split_batch(b"") == []
    assert decision.split_batch(b"\x0a") is None  # truncated length
    assert decision.split_batch(b"\x0a\x05ab") is None  # truncated body
    assert decision.split_batch(b"\x12\x00") is None  # another field
    assert decision.split_batch(b"\x0a\xff\xff\xff\xff\xff\x01") is None  # absurd length
