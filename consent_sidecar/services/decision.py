"""DecisionService on grpc.aio: translates consent.v1 messages to the core decision and back.

Reads the policy snapshot once per RPC (once per batch; once per stream message), validates and
decides through the pure core (`Index.split` with the ids validated in its pass, `Index.decide_mask`
for explained or Segment-event requests), and maps `InvalidArgument` to a status (unary) or a
per-entry `error` (batch, stream). This is the benchmarked hot path: it must never log at info per
call, never log consent payloads, and never buffer a stream without bound.

How it is fast. The handlers take and return encoded bytes (`add_to_server` registers them with
no (de)serializer); what is kept per snapshot lives in `answers.Served`:

- while requests repeat, every answer is memoised as its encoded `DecideResponse`, keyed on the
  request's own bytes (a hit costs one dict lookup and skips protobuf parsing, validation and the
  decision), else on (granted mask, destinations, explain) after parsing; a DecideBatch response
  is the concatenation of each entry's pre-encoded `responses` field and the snapshot's `policy`
  field (the same bytes protobuf produces: tests check byte equality against the plain path);
- when they do not (destination lists that vary per event), the memos turn themselves off and
  step aside: a batch is parsed at once by protobuf and each entry decided by the core's compiled
  pass, its response joined from per-destination pre-encoded pieces, with nothing kept;
- consent objects are reduced to a granted mask once per distinct encoding (a memo of its bytes).

Entries that are not cacheable (errors, preference events, non-empty `integrations`) go the
plain way each time. Input protobuf errors surface exactly as they would through the generated
deserializers (DecodeError -> UNKNOWN). Metrics are added per answer through its precomputed
`Tally` (one dict increment), decision logs are sampled per decision (one random draw). A plain
DecideBatch, and a plain Decide or DecideStream message whose young memo misses, is decided in C
(consent_core._native) when the extension is there and the decision log is off; with metrics,
the C also counts its decisions by reason and outcome and the shadow would-block ones
(`decide_batch_counted`, `decide_request_counted`).

Hostile input: an invalid entry is INVALID_ARGUMENT (unary) or that entry's `error` (batch,
stream), its message printable whatever the request held; any other exception ends the call
with INTERNAL and a fixed message (`status.abort_internal`), never leaves it unanswered. Log
lines carry the error with request content redacted (`InvalidArgument.redacted`): no consent
key, destination id or event content reaches the logs.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final, NoReturn

import grpc
import grpc.aio
import structlog
from consent.v1 import decision_pb2, decision_pb2_grpc
from consent_core.errors import InvalidArgument
from consent_core.event import check_consent_keys, parse_segment_event
from consent_core.limits import Limits
from consent_core.memo import MemoStats
from consent_core.native import NATIVE
from google.protobuf.message import DecodeError

from consent_sidecar.observe.decision_log import DecisionLog, Entry
from consent_sidecar.observe.logs import request_id
from consent_sidecar.observe.metrics import Recorder, Tally, tally
from consent_sidecar.services.answers import (
    RESPONSES_TAG,
    Answer,
    Served,
    encode_response,
    error_body,
    field,
    split_batch,
)
from consent_sidecar.services.status import abort, abort_internal
from consent_sidecar.store.policy import PolicyStore

__all__ = ["SERVICE_NAME", "Answer", "DecisionService", "add_to_server", "encode_response", "split_batch"]

SERVICE_NAME: Final = decision_pb2.DESCRIPTOR.services_by_name["DecisionService"].full_name

_log = structlog.get_logger(__name__)

_Context = grpc.aio.ServicerContext[Any, Any]

DecideRequest = decision_pb2.DecideRequest
DecideResponse = decision_pb2.DecideResponse
DecideBatchRequest = decision_pb2.DecideBatchRequest

_field = field  # the wire helper's old name, for tests and tools

# consent_core._native's whole-batch decision (None: no extension, or CONSENT_CORE_PURE=1).
_native_batch: Final[Callable[[object, bytes], bytes | None] | None] = (
    None if NATIVE is None else NATIVE.decide_batch
)
# The same, with the batch's entry count, decision counts by metrics slot and shadow would-block
# counts (category, destination, count), for a Recorder.
_Counted = tuple[bytes, int, tuple[int, ...], tuple[tuple[str, str, int], ...]]
_native_counted: Final[Callable[[object, bytes], _Counted | None] | None] = (
    None if NATIVE is None else NATIVE.decide_batch_counted
)
# One encoded DecideRequest (a Decide call, a DecideStream message) the same way; counted: with its
# decisions as a Tally holds them, (slot, count) pairs and (category, destination, count) triples.
_native_request: Final[Callable[[object, bytes], bytes | None] | None] = (
    None if NATIVE is None else NATIVE.decide_request
)
_RequestCounted = tuple[bytes, tuple[tuple[int, int], ...], tuple[tuple[str, str, int], ...]]
_native_request_counted: Final[Callable[[object, bytes], _RequestCounted | None] | None] = (
    None if NATIVE is None else NATIVE.decide_request_counted
)


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
        self._served_state: Served | None = None
        if recorder is not None:
            recorder.memo_sources.append(self.memo_stats)

    def memo_stats(self) -> list[tuple[object, MemoStats]]:
        """The memos of the snapshot served now, as (owner, stats): the index's and this service's answers'."""
        st = self._served_state
        if st is None:
            return []
        parts = st.memo_stats()
        answers = MemoStats(
            sum(p.entries for p in parts), sum(p.bytes for p in parts), sum(p.budget for p in parts),
            sum(p.evictions for p in parts),
        )
        return [(st.index, st.index.memo_stats()), (st, answers)]

    def _served(self) -> Served:
        snap = self._store.current
        st = self._served_state
        if st is None or st.snap is not snap:
            st = Served(snap, self._limits)
            self._served_state = st  # one reference swap: a concurrent reader sees old or new
        return st

    # -- deciding one request ------------------------------------------------------------------

    def _answer(self, st: Served, data: bytes, field: str, memo: bool) -> Answer:
        """The answer for one encoded DecideRequest, through the memos when `memo` (the caller
        probed the young raw generation); raises InvalidArgument/DecodeError."""
        if memo:
            a = st.raw.get_old(data)
            if a is not None:
                return a
        table = st.batch_table
        if table is not None and self._dlog is None:
            a = self._native_answer(table, data)
            if a is not None:
                if memo:
                    st.raw.put(data, a)
                return a
        request = DecideRequest.FromString(data)
        a, cacheable = self._decide(st, request, field, memo)
        if cacheable and memo:
            st.raw.put(data, a)
        return a

    def _native_answer(self, table: object, data: bytes) -> Answer | None:
        """The plain request decided in C (consent_core._native), byte-identical to the Python way,
        or None for anything else (errors, Segment events, explain...), which then goes that way."""
        if self._recorder is None:
            if _native_request is None or (body := _native_request(table, data)) is None:
                return None
            return Answer(body, None, None, ())
        if _native_request_counted is None or (got := _native_request_counted(table, data)) is None:
            return None
        body, reasons, shadow = got
        return Answer(body, Tally(reasons, shadow), None, ())

    def _granted(self, st: Served, consent: decision_pb2.Consent, field: str) -> int:
        """A consent object's granted mask, memoised on its bytes (set, even empty, = a consent object).

        Its keys are checked once per distinct encoding (only valid ones are memoised)."""
        memo = st.consent
        if memo.bypass():  # distinct consent objects (hostile ones, say): nothing kept
            prefs = dict(consent.category_preferences.items())
            check_consent_keys(prefs, f"{field}consent.category_preferences")
            return st.index.granted_mask(prefs)
        key = consent.SerializeToString()
        granted = memo.young.get(key)
        if granted is not None:
            memo.hits += 1
            return granted
        granted = memo.get_old(key)
        if granted is None:
            prefs = dict(consent.category_preferences.items())
            check_consent_keys(prefs, f"{field}consent.category_preferences")
            granted = st.index.granted_mask(prefs)
            memo.put(key, granted)
        return granted

    def _decide(
        self, st: Served, request: decision_pb2.DecideRequest, field: str, memo: bool = True
    ) -> tuple[Answer, bool]:
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
            granted = self._granted(st, request.consent, field)
        else:
            index.check_destinations(destinations, limits, f"{field}destinations")
            checked = True
            ev = parse_segment_event(request.segment_event, limits, f"{field}segment_event")
            granted = None if ev.preferences is None else index.granted_mask(ev.preferences)
            integrations = ev.integrations or None
            preference_event = ev.preference_event
        dests = tuple(destinations)
        memoable = integrations is None and not preference_event
        answers = st.answers
        use_answers = memo and memoable and not answers.bypass()
        answer_key = (granted, dests, explain)
        if use_answers:
            a = answers.young.get(answer_key)
            if a is None:
                a = answers.get_old(answer_key)
            else:
                answers.hits += 1
            if a is not None:
                return a, source != "segment_event"
        counting = self._recorder is not None
        if memoable and not (explain or counting):  # the common case: the compiled pass validates the ids
            outcome = index.split(granted, dests, limits=None if checked else limits, field=f"{field}destinations")
        else:
            if not checked:
                index.check_destinations(destinations, limits, f"{field}destinations")
            outcome = index.decide_mask(
                granted, dests, integrations=integrations, preference_event=preference_event,
                explain=explain or counting,
            )
        a = Answer(
            encode_response(outcome, st.policy, True) if explain else st.encode(outcome),
            tally(outcome.decisions or ()) if counting else None,
            granted, dests, integrations, preference_event,
        )
        if use_answers:
            answers.put(answer_key, a)
        return a, memoable and source != "segment_event"

    def _framed(self, st: Served, request: decision_pb2.DecideRequest, i: int) -> bytes:
        """Batch entry `i`, decided anew (no memo, no Answer): its framed `responses` field."""
        source = request.WhichOneof("source")
        if source == "segment_event" or request.explain:
            return self._decide(st, request, f"requests[{i}].", memo=False)[0].framed
        granted = None if source is None else self._granted(st, request.consent, f"requests[{i}].")
        body = st.encode(st.index.split(  # a slice is the cheapest way out of a upb container
            granted, tuple(request.destinations[:]), limits=self._limits, field=f"requests[{i}].destinations"
        ))
        return field(RESPONSES_TAG, body)

    def _sample(
        self, rpc: str, context: _Context, position: int | None, st: Served, a: Answer, data: bytes
    ) -> None:
        dlog = self._dlog
        assert dlog is not None
        dlog.submit(Entry(
            rpc, request_id(context.invocation_metadata()), position, st.generation, st.index,
            a.granted, a.destinations, a.integrations, a.preference_event, time.time(), data,
        ))

    def _answer_miss(self, rpc: str, st: Served, data: bytes, memo: bool) -> Answer | InvalidArgument:
        """A Decide / DecideStream request's answer past the young raw memo (the caller's inline hit),
        or its InvalidArgument, counted as an error of `rpc`."""
        try:
            return self._answer(st, data, "", memo)
        except InvalidArgument as e:
            if self._recorder is not None:
                self._recorder.error(rpc)
            return e

    def _served_one(
        self, rpc: str, context: _Context, position: int | None, st: Served, a: Answer, t0: float, data: bytes
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
        try:
            t0 = time.perf_counter()
            st = self._served()
            raw = st.raw
            memo = not raw.bypass()
            a = raw.young.get(data) if memo else None
            if a is None:
                got = self._answer_miss("Decide", st, data, memo)
                if isinstance(got, InvalidArgument):
                    _log.debug(
                        "invalid request", rpc="Decide", error=got.redacted, policy_generation=st.generation,
                        request_id=request_id(context.invocation_metadata()),
                    )
                    await abort(context, got)
                a = got
            else:
                raw.hits += 1
            self._served_one("Decide", context, None, st, a, t0, data)
            return a.body
        except (grpc.aio.AbortError, DecodeError):
            raise
        except Exception as e:
            await self._failed("Decide", context, e)

    async def decide_batch_bytes(self, data: bytes, context: _Context) -> bytes:
        try:
            return await self._decide_batch(data, context)
        except (grpc.aio.AbortError, DecodeError):
            raise
        except Exception as e:
            await self._failed("DecideBatch", context, e)

    async def _decide_batch(self, data: bytes, context: _Context) -> bytes:
        t0 = time.perf_counter()
        st = self._served()  # one snapshot for the whole batch
        table = st.batch_table
        rec = self._recorder
        if table is not None and self._dlog is None:
            # The plain case (consent or none, no explain, valid ASCII ids, within limits) decided in C,
            # byte-identical to what follows; None for anything else, which then goes the Python way.
            # With metrics, the C also counts the decisions by reason and outcome and the shadow
            # would-block ones, as `tally` would. Not with the decision log: its per-decision
            # samples stay in Python.
            if rec is None:
                if _native_batch is not None and (body := _native_batch(table, data)) is not None:
                    return body
            elif _native_counted is not None and (got := _native_counted(table, data)) is not None:
                body, n, counts, shadow = got
                rec.add_slots(counts)
                if shadow:
                    rec.count(Tally((), shadow))
                rec.batch.observe(n)
                rec.rpc["DecideBatch"].observe(time.perf_counter() - t0)
                return body
        if st.raw.bypass() and self._recorder is None and self._dlog is None:
            # Requests do not repeat: protobuf parses the batch at once, each entry is decided anew.
            requests: Sequence[decision_pb2.DecideRequest] = DecideBatchRequest.FromString(data).requests
            n = len(requests)
            if n > self._limits.max_batch:
                await abort(context, InvalidArgument("requests", f"too many entries: {n} > {self._limits.max_batch}"))
            parts: list[bytes] = []
            append = parts.append
            framed = self._framed
            for i, request in enumerate(requests):
                try:
                    append(framed(st, request, i))
                except InvalidArgument as e:
                    append(field(RESPONSES_TAG, error_body(e)))  # one bad event must not lose the batch
            append(st.policy_field)
            return b"".join(parts)
        entries = split_batch(data)
        if entries is None:  # not plain field-1 entries: let protobuf parse it (or fail as usual)
            entries = [e.SerializeToString() for e in DecideBatchRequest.FromString(data).requests]
        n = len(entries)
        if n > self._limits.max_batch:
            DecideBatchRequest.FromString(data)  # a malformed batch fails as the plain path would, first
            await abort(context, InvalidArgument("requests", f"too many entries: {n} > {self._limits.max_batch}"))
        raw = st.raw
        young = raw.young
        pending = rec.pending if rec is not None else None
        dlog = self._dlog
        parts = []
        append = parts.append
        errors = 0
        hits = 0
        for i, entry in enumerate(entries):
            a = young.get(entry)
            if a is None:
                try:
                    a = self._answer(st, entry, f"requests[{i}].", True)
                except InvalidArgument as e:
                    append(field(RESPONSES_TAG, error_body(e)))  # one bad event must not lose the batch
                    errors += 1
                    continue
                except DecodeError:
                    DecideBatchRequest.FromString(data)  # raises the batch's own error, as the plain path would
                    raise
                young = raw.young  # a put may have rotated the generations
            else:
                hits += 1
            append(a.framed)
            if pending is not None and a.tally is not None:
                pending[a.tally] = pending.get(a.tally, 0) + 1
            if dlog is not None and dlog.sampled():
                self._sample("DecideBatch", context, i, st, a, entry)
        raw.hits += hits
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
        try:
            async for data in request_iterator:
                t0 = time.perf_counter()
                st = self._served()
                raw = st.raw
                memo = not raw.bypass()
                a = raw.young.get(data) if memo else None
                if a is None:
                    got = self._answer_miss("DecideStream", st, data, memo)
                    if isinstance(got, InvalidArgument):
                        position += 1
                        yield error_body(got)  # the stream goes on
                        continue
                    a = got
                else:
                    raw.hits += 1
                self._served_one("DecideStream", context, position, st, a, t0, data)
                position += 1
                yield a.body
        except (grpc.aio.AbortError, DecodeError):
            raise
        except Exception as e:
            await self._failed("DecideStream", context, e)

    async def _failed(self, rpc: str, context: _Context, e: Exception) -> NoReturn:
        """The last resort: an exception nobody expected ends the call with INTERNAL (logged without
        its message, which may quote the request), never leaves it unanswered."""
        frame = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ is not None else None
        _log.error(
            "decision handler failed", rpc=rpc, error_type=type(e).__name__,
            where=f"{frame.filename}:{frame.lineno} in {frame.name}" if frame is not None else None,
            request_id=request_id(context.invocation_metadata()),
        )
        if self._recorder is not None:
            self._recorder.error(rpc)
        await abort_internal(context)

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
