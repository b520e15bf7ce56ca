"""WatchAuditEvents: the open streams, their per-principal cap, revocation, and the events encoded once.

Owns what AdminService's one streaming RPC needs beyond the gate: the registry of open streams
(`WatchStreams`: at most MAX_WATCH_STREAMS_PER_PRINCIPAL per principal, RESOURCE_EXHAUSTED beyond;
a stream whose principal is revoked ends at that reload), the loop that turns the trail's
`watch` into the stream's messages, and `EncodedEvents`, the consent.v1.AuditEvent bytes of
each sequence built and serialised once and shared by every stream of the process: 200 members
catching up from sequence 0 cost one encoding per event, not 200. Events are the same for every
caller (no field depends on the principal or role), so the sequence (checked against the
event's hash) is the whole key. The stream yields those bytes; `add_to_server` registers
WatchAuditEvents without a response serializer (every other method keeps the generated
stubs' handlers), so clients see exactly the bytes the generated serializer would send.

History is replayed within the process-wide `audit.pacing.ReplayPacer` budget (serve
--audit-replay-rate), live events as they come. Must never buffer for a client (each message
waits for gRPC to take it; the trail cuts off a reader that falls behind), decide who may
call (the gate has done that), or log event contents.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any, Final

import grpc
import grpc.aio
from consent.v1 import admin_pb2, admin_pb2_grpc
from consent_core.errors import ResourceExhausted, SidecarError
from google.protobuf import timestamp_pb2

from consent_sidecar.audit import AuditRecord
from consent_sidecar.audit.pacing import Pacer
from consent_sidecar.audit.trail import AuditTrail
from consent_sidecar.auth.principals import Principal
from consent_sidecar.observe import logs

__all__ = [
    "DEFAULT_ENCODED_EVENTS_BYTES",
    "MAX_WATCH_STREAMS_PER_PRINCIPAL",
    "EncodedEvents",
    "WatchStreams",
    "add_to_server",
    "audit_event",
    "timestamp",
]

MAX_WATCH_STREAMS_PER_PRINCIPAL: Final = 16
# Encoded events kept for the streams of a process: a ~1,400-event trail of small events is
# under 1 MB; an event larger than an eighth of it (a category of many destinations) is encoded
# for each stream instead of evicting everything else.
DEFAULT_ENCODED_EVENTS_BYTES: Final = 8 << 20
_ENTRY_OVERHEAD: Final = 120  # bytes of Python objects per kept entry, besides the encoding itself

_log = logs.get_logger(__name__)


def timestamp(t: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(t)
    return ts


def audit_event(r: AuditRecord) -> admin_pb2.AuditEvent:
    """A stored audit record as consent.v1.AuditEvent (AuditAction names equal the proto enum's)."""
    return admin_pb2.AuditEvent(
        sequence=r.sequence, time=timestamp(r.time), actor=r.actor, action=r.action.proto_name,
        category_id=r.category_id, destination=r.destination, before_json=r.before_json,
        after_json=r.after_json, detail=r.detail, prev_hash=r.prev_hash, hash=r.hash,
    )  # fmt: skip


class EncodedEvents:
    """Serialised consent.v1.AuditEvent by sequence, least recently used out beyond `max_bytes`.

    Used on one event loop (the admin server's). An entry is only returned for the record whose
    hash it was built from, so a trail replaced under the same sequences is never answered stale.
    """

    def __init__(self, max_bytes: int = DEFAULT_ENCODED_EVENTS_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must not be negative (got {max_bytes})")
        self.max_bytes = max_bytes
        self._largest = max_bytes // 8
        self._entries: collections.OrderedDict[int, tuple[str, bytes]] = collections.OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, r: AuditRecord) -> bytes:
        """`audit_event(r)` serialised, from the cache when another stream already sent it."""
        entries = self._entries
        hit = entries.get(r.sequence)
        if hit is not None and hit[0] == r.hash:
            entries.move_to_end(r.sequence)
            self.hits += 1
            return hit[1]
        self.misses += 1
        data = audit_event(r).SerializeToString()
        size = len(data) + _ENTRY_OVERHEAD
        if size > self._largest:
            return data
        if hit is not None:
            del entries[r.sequence]
            self.bytes -= len(hit[1]) + _ENTRY_OVERHEAD
        entries[r.sequence] = (r.hash, data)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, old) = entries.popitem(last=False)
            self.bytes -= len(old) + _ENTRY_OVERHEAD
        return data


class _Stream:
    """One open WatchAuditEvents call: who holds it, whether it follows live events, what ends it early."""

    __slots__ = ("ended", "live", "loop", "principal")

    def __init__(self, principal: Principal | None) -> None:
        self.principal = principal
        self.live = False  # caught up: history replayed, following appends
        self.loop = asyncio.get_running_loop()
        self.ended: asyncio.Future[SidecarError] = self.loop.create_future()

    def end(self, error: SidecarError) -> None:
        """On the stream's loop: end it with `error` at its next step."""
        if not self.ended.done():
            self.ended.set_result(error)


class WatchStreams:
    """The WatchAuditEvents streams of one AdminService: opened, capped, revoked, ended at shutdown.

    `buffer` = live events queued per stream before it is cut off; `pacer` = the history
    replay budget (None: unpaced); `encoded` = the shared encodings.
    """

    def __init__(
        self, audit: AuditTrail, *, buffer: int, pacer: Pacer | None, encoded: EncodedEvents | None = None
    ) -> None:
        if buffer < 1:
            raise ValueError(f"watch_buffer must be at least 1 (got {buffer})")
        self._audit = audit
        self._buffer = buffer
        self.pacer = pacer
        self.encoded = encoded if encoded is not None else EncodedEvents()
        self._streams: set[_Stream] = set()
        self._closing = asyncio.Event()

    @property
    def open(self) -> int:
        """Streams open now."""
        return len(self._streams)

    @property
    def live(self) -> int:
        """Streams open now that have replayed their history and follow live events."""
        return sum(1 for s in self._streams if s.live)

    def close(self) -> None:
        """Shutdown: every stream ends cleanly (OK) at its next step; new ones end at once."""
        self._closing.set()

    def revoke(self, still_valid: Callable[[Principal], SidecarError | None]) -> None:
        """After a principals reload (any thread): end the streams whose principal `still_valid` refuses."""
        for stream in list(self._streams):
            if stream.principal is None:
                continue
            error = still_valid(stream.principal)
            if error is not None:
                _log.info("ending a watch stream: its principal was revoked", principal=stream.principal.id)
                with contextlib.suppress(RuntimeError):  # its loop is closed: the stream is gone
                    stream.loop.call_soon_threadsafe(stream.end, error)

    def _open(self, principal: Principal | None) -> _Stream:
        """Registers a stream of `principal`; ResourceExhausted when it already holds the most allowed."""
        who_id = None if principal is None else principal.id
        held = sum(1 for s in self._streams if (None if s.principal is None else s.principal.id) == who_id)
        if held >= MAX_WATCH_STREAMS_PER_PRINCIPAL:
            who = f"principal {principal.id!r}" if principal is not None else "this caller"
            raise ResourceExhausted(
                f"{who} already has {held} WatchAuditEvents streams open, the most allowed per principal; "
                "close one first"
            )
        stream = _Stream(principal)
        self._streams.add(stream)  # no await since the count: the limit holds under concurrency
        return stream

    async def stream(self, after_sequence: int, principal: Principal | None) -> AsyncIterator[bytes]:
        """The encoded events after `after_sequence`, then live ones, for one call of `principal`.

        Each yield waits for gRPC to take the message, so a client that stops reading stops
        this loop; the trail keeps queueing its live events (up to `buffer`) and then cuts it off
        with ResourceExhausted. Ends cleanly at shutdown or when the trail closes; raises the
        gate's error when the principal is revoked.
        """
        if self._closing.is_set():
            return
        stream = self._open(principal)

        def caught_up() -> None:
            stream.live = True

        records = self._audit.watch(after_sequence, buffer=self._buffer, on_live=caught_up, pace=self.pacer)
        closing = asyncio.ensure_future(self._closing.wait())
        step: asyncio.Future[AuditRecord] | None = None
        me = asyncio.current_task()
        encode = self.encoded.get

        def interrupt(_: object) -> None:  # shutdown or revocation: stop waiting for the next record
            if step is not None and not step.done():
                step.cancel()

        # One callback per stream, not a three-way wait per event: catching up sends thousands of
        # events, and each wait's bookkeeping ran on the loop that also serves decisions.
        closing.add_done_callback(interrupt)
        stream.ended.add_done_callback(interrupt)
        try:
            while True:
                if stream.ended.done():
                    raise stream.ended.result()  # the principal was revoked at a reload
                if closing.done():
                    return  # shutting down: end the stream cleanly (finally stops the watch)
                step = asyncio.ensure_future(anext(records))
                try:
                    record = await step
                except StopAsyncIteration:  # the log was closed
                    return
                except asyncio.CancelledError:
                    if me is not None and me.cancelling():
                        raise  # the call itself was cancelled
                    continue  # interrupted: the loop's head says why
                if stream.ended.done():  # revoked while the record was read: it is not sent
                    raise stream.ended.result()
                yield encode(record)
        finally:
            self._streams.discard(stream)
            stream.ended.remove_done_callback(interrupt)
            closing.cancel()
            if step is not None and not step.done():
                step.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await step
            await records.aclose()


class _Capture:
    """Stands in for a server while the generated `add_AdminServiceServicer_to_server` hands over its handlers."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass  # the same handlers arrive below, by name

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self.handlers = dict(handlers)


def add_to_server(servicer: admin_pb2_grpc.AdminServiceServicer, server: grpc.aio.Server, service: str) -> str:
    """Registers `servicer` as the generated stubs do, but WatchAuditEvents yields encoded bytes; returns `service`."""
    capture = _Capture()
    admin_pb2_grpc.add_AdminServiceServicer_to_server(servicer, capture)  # type: ignore[no-untyped-call]
    handlers = capture.handlers
    handlers["WatchAuditEvents"] = grpc.unary_stream_rpc_method_handler(
        servicer.WatchAuditEvents,
        request_deserializer=admin_pb2.WatchAuditEventsRequest.FromString,
        response_serializer=None,  # the messages are EncodedEvents' bytes already
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)
    return service
