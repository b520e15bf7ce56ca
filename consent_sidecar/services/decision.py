"""DecisionService on grpc.aio: translates consent.v1 messages to the core decision and back.

Reads the policy snapshot once per RPC (once per batch; once per stream message), validates and
decides through the pure core (`consent_core.event`, `Index.decide_mask`), and maps `InvalidArgument`
to a status (unary) or a per-entry `error` (batch, stream). This is the benchmarked hot path: it
must never log at info per call, never log consent payloads, and never buffer a stream without bound.

How it is fast. The handlers take and return encoded bytes (`add_to_server` registers them with
no (de)serializer), and every answer is memoised per snapshot as its encoded `DecideResponse`:

- keyed on the request's own bytes (consent and no-consent requests: real traffic repeats a
  source's destination list and a handful of consent vectors), a hit costs one dict lookup and
  skips protobuf parsing, validation and the decision altogether;
- else keyed on (granted mask, destinations, explain) after parsing (a different encoding of
  the same request, or a `segment_event` with the same consent and no `integrations`);
- a DecideBatch response is the concatenation of each entry's pre-encoded `responses` field
  (field 1, length-delimited) and the snapshot's pre-encoded `policy` field (2): the same bytes
  protobuf produces for the message (tests check byte equality against the plain path).

Entries that are not cacheable (errors, preference events, non-empty `integrations`) go the
plain way each time. Input protobuf errors surface exactly as they would through the generated
deserializers (DecodeError -> UNKNOWN). Metrics are added per answer through its precomputed
`Tally` (one dict increment), decision logs are sampled per decision (one random draw).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Final, Generic, TypeVar

import grpc
import grpc.aio
import structlog
from consent.v1 import decision_pb2, decision_pb2_grpc
from consent_core.errors import InvalidArgument
from consent_core.event import check_destinations, parse_segment_event
from consent_core.index import Index, Outcome
from consent_core.limits import Limits
from google.protobuf.message import DecodeError

from consent_sidecar.observe.decision_log import DecisionLog, Entry
from consent_sidecar.observe.logs import request_id
from consent_sidecar.observe.metrics import Recorder, Tally, tally
from consent_sidecar.services.status import abort
from consent_sidecar.store.policy import PolicyStore, Snapshot

__all__ = ["SERVICE_NAME", "Answer", "DecisionService", "add_to_server", "encode_response", "split_batch"]

SERVICE_NAME: Final = decision_pb2.DESCRIPTOR.services_by_name["DecisionService"].full_name

_log = structlog.get_logger(__name__)

_Context = grpc.aio.ServicerContext[Any, Any]

DecideRequest = decision_pb2.DecideRequest
DecideResponse = decision_pb2.DecideResponse
DecideBatchRequest = decision_pb2.DecideBatchRequest

_RESPONSES_TAG: Final = b"\x0a"  # DecideBatchResponse.responses: field 1, wire type 2 (length-delimited)
_POLICY_TAG: Final = b"\x12"  # DecideBatchResponse.policy: field 2, wire type 2
_ENTRY_TAG: Final = 0x0A  # DecideBatchRequest.requests: field 1, wire type 2

# Memo bounds per snapshot, per generation (two generations each: see `_Memo`).
_RAW_ENTRIES: Final = 8192
_RAW_BYTES: Final = 4 << 20
_ANSWER_ENTRIES: Final = 8192
_ANSWER_BYTES: Final = 4 << 20
_CONSENT_ENTRIES: Final = 4096
_MAX_MEMO_ITEM: Final = 64 << 10  # larger answers (thousands of destinations) are not memoised


# -- wire format ----------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, body: bytes) -> bytes:
    """One length-delimited field: tag, varint length, body."""
    return tag + _varint(len(body)) + body


def split_batch(data: bytes) -> list[bytes] | None:
    """The encoded DecideRequest entries of an encoded DecideBatchRequest, in order.

    None when `data` holds anything but field-1 entries or is truncated: the caller then parses
    it with protobuf (which accepts unknown fields or raises the DecodeError the plain path would).
    Entry contents are not checked here; each is parsed (or found in the memo) on its own.
    """
    out: list[bytes] = []
    append = out.append
    i = 0
    n = len(data)
    try:
        while i < n:
            if data[i] != _ENTRY_TAG:
                return None
            length = data[i + 1]
            if length < 0x80:  # entries under 128 bytes: a one-byte length
                i += 2
            elif (b2 := data[i + 2]) < 0x80:  # under 16 KiB: two bytes, the common case
                length = (length & 0x7F) | (b2 << 7)
                i += 3
            else:
                length = (length & 0x7F) | ((b2 & 0x7F) << 7)
                i += 3
                shift = 14
                while True:
                    b = data[i]
                    i += 1
                    length |= (b & 0x7F) << shift
                    if not b & 0x80:
                        break
                    shift += 7
                    if shift > 28:
                        return None
            end = i + length
            if end > n:
                return None
            append(data[i:end])
            i = end
    except IndexError:
        return None
    return out


# -- answers and their memos ------------------------------------------------------------------------


class Answer:
    """One decided request: its encoded response (alone and as a batch entry) and what it counts as."""

    __slots__ = ("body", "destinations", "framed", "granted", "integrations", "preference_event", "tally")

    def __init__(
        self,
        body: bytes,
        tally: Tally | None,
        granted: int | None,
        destinations: tuple[str, ...],
        integrations: dict[str, Any] | None = None,
        preference_event: bool = False,
    ) -> None:
        self.body = body
        self.framed = _field(_RESPONSES_TAG, body)
        self.tally = tally
        self.granted = granted
        self.destinations = destinations
        self.integrations = integrations
        self.preference_event = preference_event


K = TypeVar("K")
V = TypeVar("V")


class _Memo(Generic[K, V]):
    """A bounded map in two generations: hits in `old` move to `young`; a full `young` becomes `old`.

    The hot path reads `young` directly; `get_old` and `put` are the slow path. Bounded by
    entries and by a weight (bytes, roughly) per generation.
    """

    __slots__ = ("max_entries", "max_weight", "old", "weigh", "weight", "young")

    def __init__(self, max_entries: int, max_weight: int, weigh: Callable[[K, V], int]) -> None:
        self.young: dict[K, V] = {}
        self.old: dict[K, V] = {}
        self.weight = 0
        self.max_entries = max_entries
        self.max_weight = max_weight
        self.weigh = weigh

    def get_old(self, key: K) -> V | None:
        value = self.old.get(key)
        if value is not None:
            self.put(key, value)
        return value

    def put(self, key: K, value: V) -> None:
        w = self.weigh(key, value)
        if w > _MAX_MEMO_ITEM:
            return
        if len(self.young) >= self.max_entries or self.weight + w > self.max_weight:
            self.old = self.young
            self.young = {}
            self.weight = 0
        self.young[key] = value
        self.weight += w


_AnswerKey = tuple[int | None, tuple[str, ...], bool]


def _weigh_raw(key: bytes, a: Answer) -> int:
    return len(key) + 2 * len(a.body) + 64


def _weigh_answer(key: _AnswerKey, a: Answer) -> int:
    return 8 * len(key[1]) + 2 * len(a.body) + 64


def _weigh_consent(key: bytes, granted: int) -> int:
    return len(key) + 32


class _Served:
    """Everything memoised for one policy snapshot; replaced (never cleared) when the snapshot changes."""

    __slots__ = ("answers", "consent", "generation", "index", "policy", "policy_field", "raw", "snap")

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.index: Index = snap.index
        self.generation = snap.generation
        self.policy = decision_pb2.PolicyVersion(generation=snap.generation, digest=snap.digest)
        self.policy_field = _field(_POLICY_TAG, self.policy.SerializeToString())
        self.raw: _Memo[bytes, Answer] = _Memo(_RAW_ENTRIES, _RAW_BYTES, _weigh_raw)
        self.answers: _Memo[_AnswerKey, Answer] = _Memo(_ANSWER_ENTRIES, _ANSWER_BYTES, _weigh_answer)
        self.consent: _Memo[bytes, int] = _Memo(_CONSENT_ENTRIES, 1 << 62, _weigh_consent)


def encode_response(outcome: Outcome, policy: decision_pb2.PolicyVersion, explain: bool) -> bytes:
    """The DecideResponse for `outcome`, encoded: decisions only when `explain`."""
    msg = DecideResponse()
    msg.allowed.extend(outcome.allowed)
    msg.blocked.extend(outcome.blocked)
    if explain and outcome.decisions is not None:
        add = msg.decisions.add
        for d in outcome.decisions:
            add(
                destination=d.destination,
                allowed=d.allowed,
                reason=int(d.reason),  # consent_core.index.Reason values equal consent.v1.Reason
                required_categories=d.required_categories,
                missing_categories=d.missing_categories,
                shadow_missing_categories=d.shadow_missing_categories,
            )
    msg.policy.CopyFrom(policy)
    return msg.SerializeToString()


def _error_body(e: InvalidArgument) -> bytes:
    return DecideResponse(error=str(e)).SerializeToString()


# -- the service --------------------------------------------------------------------------------------


class DecisionService(decision_pb2_grpc.DecisionServiceServicer):
    """consent.v1.DecisionService over a PolicyStore, with explicit input limits.

    Register with `add_to_server` (the bytes handlers). The message-level methods (`Decide`,
    `DecideBatch`, `DecideStream`) serve servers registered through the generated
    `add_DecisionServiceServicer_to_server`, and give the same answers.
    """

    def __init__(
        self,
        store: PolicyStore,
        limits: Limits,
        *,
        recorder: Recorder | None = None,
        decision_log: DecisionLog | None = None,
    ) -> None:
        self._store = store
        self._limits = limits
        self._recorder = recorder
        self._dlog = decision_log
        self._served_state: _Served | None = None

    def _served(self) -> _Served:
        snap = self._store.current
        st = self._served_state
        if st is None or st.snap is not snap:
            st = _Served(snap)
            self._served_state = st  # one reference swap: a concurrent reader sees old or new
        return st

    # -- deciding one request ------------------------------------------------------------------

    def _answer(self, st: _Served, data: bytes, field: str) -> Answer:
        """The answer for one encoded DecideRequest, through the memos; raises InvalidArgument/DecodeError."""
        a = st.raw.get_old(data)
        if a is not None:
            return a
        request = DecideRequest.FromString(data)
        a, cacheable = self._decide(st, request, field)
        if cacheable:
            st.raw.put(data, a)
        return a

    def _decide(self, st: _Served, request: decision_pb2.DecideRequest, field: str) -> tuple[Answer, bool]:
        """(answer, whether its request bytes may key it); raises InvalidArgument naming the field."""
        limits = self._limits
        index = st.index
        # A slice is the cheapest way out of a upb container.
        destinations = request.destinations[:]
        explain = request.explain
        source = request.WhichOneof("source")
        integrations: dict[str, Any] | None = None
        preference_event = False
        checked = False
        granted: int | None
        if source is None:
            granted = None
        elif source == "consent":
            # Set, even empty, means a consent object. Its bytes key the granted mask.
            consent = request.consent
            key = consent.SerializeToString()
            granted = st.consent.young.get(key)
            if granted is None:
                granted = st.consent.get_old(key)
                if granted is None:
                    granted = index.granted_mask(dict(consent.category_preferences.items()))
                    st.consent.put(key, granted)
        else:
            check_destinations(destinations, limits, f"{field}destinations")
            checked = True
            ev = parse_segment_event(request.segment_event, limits, f"{field}segment_event")
            granted = None if ev.preferences is None else index.granted_mask(ev.preferences)
            integrations = ev.integrations or None
            preference_event = ev.preference_event
        dests = tuple(destinations)
        memoable = integrations is None and not preference_event
        answer_key = (granted, dests, explain)
        if memoable:
            a = st.answers.young.get(answer_key)
            if a is None:
                a = st.answers.get_old(answer_key)
            if a is not None:
                return a, source != "segment_event"
        if not checked:
            check_destinations(destinations, limits, f"{field}destinations")
        counting = self._recorder is not None
        outcome = index.decide_mask(
            granted, dests, integrations=integrations, preference_event=preference_event,
            explain=explain or counting,
        )
        a = Answer(
            encode_response(outcome, st.policy, explain),
            tally(outcome.decisions or ()) if counting else None,
            granted, dests, integrations, preference_event,
        )
        if memoable:
            st.answers.put(answer_key, a)
        return a, memoable and source != "segment_event"

    def _sample(
        self, rpc: str, context: _Context, position: int | None, st: _Served, a: Answer, data: bytes
    ) -> None:
        dlog = self._dlog
        assert dlog is not None
        dlog.submit(Entry(
            rpc, request_id(context.invocation_metadata()), position, st.generation, st.index,
            a.granted, a.destinations, a.integrations, a.preference_event, time.time(), data,
        ))

    def _answer_miss(self, rpc: str, st: _Served, data: bytes) -> Answer | InvalidArgument:
        """A Decide / DecideStream request's answer past the young raw memo (the caller's inline hit),
        or its InvalidArgument, counted as an error of `rpc`."""
        try:
            return self._answer(st, data, "")
        except InvalidArgument as e:
            if self._recorder is not None:
                self._recorder.error(rpc)
            return e

    def _served_one(
        self, rpc: str, context: _Context, position: int | None, st: _Served, a: Answer, t0: float, data: bytes
    ) -> None:
        """Counts and times one Decide / DecideStream answer, and samples it for the decision log."""
        rec = self._recorder
        if rec is not None:
            if a.tally is not None:
                pending = rec.pending
                pending[a.tally] = pending.get(a.tally, 0) + 1
            rec.rpc[rpc].observe(time.perf_counter() - t0)
        dlog = self._dlog
        if dlog is not None and dlog.sampled():
            self._sample(rpc, context, position, st, a, data)

    # -- the bytes handlers (registered by add_to_server) ---------------------------------------

    async def decide_bytes(self, data: bytes, context: _Context) -> bytes:
        t0 = time.perf_counter()
        st = self._served()
        a = st.raw.young.get(data)
        if a is None:
            got = self._answer_miss("Decide", st, data)
            if isinstance(got, InvalidArgument):
                _log.debug(
                    "invalid request", rpc="Decide", error=str(got), policy_generation=st.generation,
                    request_id=request_id(context.invocation_metadata()),
                )
                await abort(context, got)
            a = got
        self._served_one("Decide", context, None, st, a, t0, data)
        return a.body

    async def decide_batch_bytes(self, data: bytes, context: _Context) -> bytes:
        t0 = time.perf_counter()
        entries = split_batch(data)
        if entries is None:  # not plain field-1 entries: let protobuf parse it (or fail as usual)
            entries = [e.SerializeToString() for e in DecideBatchRequest.FromString(data).requests]
        n = len(entries)
        if n > self._limits.max_batch:
            DecideBatchRequest.FromString(data)  # a malformed batch fails as the plain path would, first
            await abort(context, InvalidArgument("requests", f"too many entries: {n} > {self._limits.max_batch}"))
        st = self._served()  # one snapshot for the whole batch
        young = st.raw.young
        rec = self._recorder
        pending = rec.pending if rec is not None else None
        dlog = self._dlog
        parts: list[bytes] = []
        append = parts.append
        errors = 0
        for i, entry in enumerate(entries):
            a = young.get(entry)
            if a is None:
                try:
                    a = self._answer(st, entry, f"requests[{i}].")
                except InvalidArgument as e:
                    append(_field(_RESPONSES_TAG, _error_body(e)))  # one bad event must not lose the batch
                    errors += 1
                    continue
                except DecodeError:
                    DecideBatchRequest.FromString(data)  # raises the batch's own error, as the plain path would
                    raise
                young = st.raw.young  # a put may have rotated the generations
            append(a.framed)
            if pending is not None and a.tally is not None:
                pending[a.tally] = pending.get(a.tally, 0) + 1
            if dlog is not None and dlog.sampled():
                self._sample("DecideBatch", context, i, st, a, entry)
        append(st.policy_field)
        if rec is not None:
            if errors:
                rec.errors["DecideBatch"] += errors
            rec.batch.observe(n)
            rec.rpc["DecideBatch"].observe(time.perf_counter() - t0)
        return b"".join(parts)

    async def decide_stream_bytes(
        self, request_iterator: AsyncIterator[bytes], context: _Context
    ) -> AsyncIterator[bytes]:
        # Read one, decide, yield one: each yield waits for the write, so a slow reader
        # back-pressures the sender through gRPC flow control and nothing queues here.
        position = 0
        async for data in request_iterator:
            t0 = time.perf_counter()
            st = self._served()
            a = st.raw.young.get(data)
            if a is None:
                got = self._answer_miss("DecideStream", st, data)
                if isinstance(got, InvalidArgument):
                    position += 1
                    yield _error_body(got)  # the stream goes on
                    continue
                a = got
            self._served_one("DecideStream", context, position, st, a, t0, data)
            position += 1
            yield a.body

    # -- the message-level API (generated registration) -------------------------------------------

    async def Decide(self, request: decision_pb2.DecideRequest, context: _Context) -> decision_pb2.DecideResponse:
        return DecideResponse.FromString(await self.decide_bytes(request.SerializeToString(), context))

    async def DecideBatch(
        self, request: decision_pb2.DecideBatchRequest, context: _Context
    ) -> decision_pb2.DecideBatchResponse:
        body = await self.decide_batch_bytes(request.SerializeToString(), context)
        return decision_pb2.DecideBatchResponse.FromString(body)

    async def DecideStream(
        self, request_iterator: AsyncIterator[decision_pb2.DecideRequest], context: _Context
    ) -> AsyncIterator[decision_pb2.DecideResponse]:
        async def encoded() -> AsyncIterator[bytes]:
            async for request in request_iterator:
                yield request.SerializeToString()

        async for body in self.decide_stream_bytes(encoded(), context):
            yield DecideResponse.FromString(body)


def add_to_server(servicer: DecisionService, server: grpc.aio.Server) -> str:
    """Registers `servicer`'s bytes handlers (no protobuf (de)serializers) and returns the service name."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Decide": grpc.unary_unary_rpc_method_handler(servicer.decide_bytes),
        "DecideBatch": grpc.unary_unary_rpc_method_handler(servicer.decide_batch_bytes),
        "DecideStream": grpc.stream_stream_rpc_method_handler(servicer.decide_stream_bytes),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
    return SERVICE_NAME
