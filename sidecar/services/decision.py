"""DecisionService on grpc.aio: translates consent.v1 messages to the core decision and back.

Reads the policy snapshot once per RPC (once per batch; once per stream message), validates and
decides through `sidecar.event.decide_one`, and maps `InvalidArgument` to a status (unary) or a
per-entry `error` (batch, stream). This is the benchmarked hot path: it must never log at info
per call, never log consent payloads, and never buffer a stream without bound.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final

import grpc.aio
import structlog
from consent.v1 import decision_pb2, decision_pb2_grpc

from sidecar.config import Limits
from sidecar.errors import InvalidArgument
from sidecar.event import decide_one
from sidecar.index import Index, Outcome
from sidecar.logs import request_id
from sidecar.policy import PolicyStore, Snapshot
from sidecar.services.status import abort

__all__ = ["SERVICE_NAME", "DecisionService"]

SERVICE_NAME: Final = decision_pb2.DESCRIPTOR.services_by_name["DecisionService"].full_name

_log = structlog.get_logger(__name__)

_Context = grpc.aio.ServicerContext[Any, Any]


def _decide(index: Index, limits: Limits, request: decision_pb2.DecideRequest, field: str) -> Outcome:
    """Decides one DecideRequest; raises InvalidArgument naming the field (prefixed by `field`)."""
    # Copy out of the protobuf containers once: validation and the index then iterate plain
    # Python objects (a slice and items() are the cheapest ways out of upb containers).
    destinations = request.destinations[:]
    source = request.WhichOneof("source")
    if source is None:
        return decide_one(index, limits, destinations, explain=request.explain, field=field)
    if source == "consent":
        # Set, even empty, means a consent object.
        prefs = dict(request.consent.category_preferences.items())
        return decide_one(index, limits, destinations, preferences=prefs, explain=request.explain, field=field)
    return decide_one(
        index, limits, destinations, segment_event=request.segment_event, explain=request.explain, field=field
    )


def _fill(msg: decision_pb2.DecideResponse, outcome: Outcome, policy: decision_pb2.PolicyVersion) -> None:
    """Writes `outcome` into an (empty) response in place: no intermediate message copies."""
    msg.allowed.extend(outcome.allowed)
    msg.blocked.extend(outcome.blocked)
    if outcome.decisions is not None:
        add = msg.decisions.add
        for d in outcome.decisions:
            add(
                destination=d.destination,
                allowed=d.allowed,
                reason=int(d.reason),  # sidecar.index.Reason values equal consent.v1.Reason
                required_categories=d.required_categories,
                missing_categories=d.missing_categories,
                shadow_missing_categories=d.shadow_missing_categories,
            )
    msg.policy.CopyFrom(policy)


class DecisionService(decision_pb2_grpc.DecisionServiceServicer):
    """consent.v1.DecisionService over a PolicyStore, with explicit input limits."""

    def __init__(self, store: PolicyStore, limits: Limits) -> None:
        self._store = store
        self._limits = limits
        # PolicyVersion built once per snapshot, not once per call.
        self._version_of: tuple[Snapshot | None, decision_pb2.PolicyVersion] = (None, decision_pb2.PolicyVersion())

    def _snapshot(self) -> tuple[Snapshot, decision_pb2.PolicyVersion]:
        snap = self._store.current
        cached, version = self._version_of
        if cached is not snap:
            version = decision_pb2.PolicyVersion(generation=snap.generation, digest=snap.digest)
            self._version_of = (snap, version)  # a tuple swap: concurrent readers see a consistent pair
        return snap, version

    async def Decide(self, request: decision_pb2.DecideRequest, context: _Context) -> decision_pb2.DecideResponse:
        snap, version = self._snapshot()
        try:
            outcome = _decide(snap.index, self._limits, request, "")
        except InvalidArgument as e:
            _log.debug(
                "invalid request", rpc="Decide", error=str(e), policy_generation=snap.generation,
                request_id=request_id(context.invocation_metadata()),
            )
            await abort(context, e)
        response = decision_pb2.DecideResponse()
        _fill(response, outcome, version)
        return response

    async def DecideBatch(
        self, request: decision_pb2.DecideBatchRequest, context: _Context
    ) -> decision_pb2.DecideBatchResponse:
        entries = request.requests
        n = len(entries)
        if n > self._limits.max_batch:
            await abort(context, InvalidArgument("requests", f"too many entries: {n} > {self._limits.max_batch}"))
        snap, version = self._snapshot()  # one snapshot for the whole batch
        index, limits = snap.index, self._limits
        response = decision_pb2.DecideBatchResponse()
        add = response.responses.add
        for i, entry in enumerate(entries):
            msg = add()
            try:
                outcome = _decide(index, limits, entry, f"requests[{i}].")
            except InvalidArgument as e:
                msg.error = str(e)  # one bad event must not lose the batch
                continue
            _fill(msg, outcome, version)
        response.policy.CopyFrom(version)
        return response

    async def DecideStream(
        self, request_iterator: AsyncIterator[decision_pb2.DecideRequest], context: _Context
    ) -> AsyncIterator[decision_pb2.DecideResponse]:
        # Read one, decide, yield one: each yield waits for the write, so a slow reader
        # back-pressures the sender through gRPC flow control and nothing queues here.
        limits = self._limits
        async for request in request_iterator:
            snap, version = self._snapshot()
            response = decision_pb2.DecideResponse()
            try:
                outcome = _decide(snap.index, limits, request, "")
            except InvalidArgument as e:
                response.error = str(e)  # the stream goes on
            else:
                _fill(response, outcome, version)
            yield response
