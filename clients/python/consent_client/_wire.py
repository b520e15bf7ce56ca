"""Request encoding and response decoding for both clients: `Request` <-> consent.v1 messages.

Owns what the client accepts as a request (`RequestLike`), the checks that must hold before a
request can even be encoded (strict booleans, JSON-serialisable events), and the split of
`decide_many` into DecideBatch chunks with their answers put back in request order. Pure:
never does I/O and never decides anything itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from consent.v1 import decision_pb2

from consent_client.errors import ConsentError, Internal, InvalidArgument
from consent_client.results import DecideResult, PolicyVersion, Request, consent_problem

__all__ = ["Chunk", "RequestLike", "as_request", "batches", "encode_event", "to_proto"]

RequestLike: TypeAlias = Request | Mapping[str, Any] | decision_pb2.DecideRequest
"""A `Request`, a Segment event dict (decided for every known destination), or a raw DecideRequest."""


def encode_event(event: Mapping[str, Any] | bytes | str) -> bytes:
    """A Segment event as the raw JSON bytes DecideRequest.segment_event carries."""
    if isinstance(event, bytes):
        return event
    if isinstance(event, str):
        return event.encode()
    try:
        return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"segment_event: not JSON-serialisable: {e}") from None


def as_request(item: RequestLike) -> Request:
    """`item` as a `Request`; raises TypeError for anything else."""
    if isinstance(item, Request):
        return item
    if isinstance(item, decision_pb2.DecideRequest):
        source = item.WhichOneof("source")
        return Request(
            tuple(item.destinations),
            dict(item.consent.category_preferences) if source == "consent" else None,
            item.segment_event if source == "segment_event" else None,
            item.explain,
        )
    if isinstance(item, Mapping):
        return Request(event=item)
    raise TypeError(f"expected a Request, a Segment event dict or a DecideRequest, got {type(item).__name__}")


def to_proto(request: Request) -> decision_pb2.DecideRequest:
    """The wire form; raises InvalidArgument for what cannot even be encoded."""
    if request.consent is not None:
        # Strict booleans: protobuf would turn 1 into true, the embedded decider would not grant it.
        if (problem := consent_problem(request.consent)) is not None:
            raise InvalidArgument(problem)
        consent = decision_pb2.Consent(category_preferences=request.consent)  # set even when empty
        return decision_pb2.DecideRequest(
            consent=consent, destinations=request.destinations, explain=request.explain
        )
    if request.event is not None:
        return decision_pb2.DecideRequest(
            segment_event=encode_event(request.event), destinations=request.destinations, explain=request.explain
        )
    return decision_pb2.DecideRequest(destinations=request.destinations, explain=request.explain)


def _policy_of(msg: decision_pb2.DecideBatchResponse) -> PolicyVersion | None:
    if not msg.HasField("policy"):
        return None
    return PolicyVersion(msg.policy.generation, msg.policy.digest)


@dataclass(frozen=True, slots=True)
class Chunk:
    """One DecideBatch RPC's worth of requests, and the entries answered without sending them.

    message: the DecideBatchRequest of the entries that encode; None when none does (then
        no RPC is needed). local: error results, by position, of the entries that do not.
    """

    requests: list[Request]
    message: decision_pb2.DecideBatchRequest | None
    local: dict[int, DecideResult]

    def local_results(self) -> list[DecideResult]:
        """The answers of a chunk with nothing to send (every entry failed to encode)."""
        return [self.local[i] for i in range(len(self.requests))]

    def results(self, response: decision_pb2.DecideBatchResponse) -> list[DecideResult]:
        """The sidecar's answers merged with the local ones, in request order."""
        expected = len(self.requests) - len(self.local)
        if len(response.responses) != expected:
            raise Internal(f"DecideBatch answered {len(response.responses)} entries for {expected} requests")
        policy = _policy_of(response)
        answers = iter(response.responses)
        local = self.local
        return [
            local[i] if i in local else DecideResult.from_proto(next(answers), policy)
            for i in range(len(self.requests))
        ]

    def fallback(
        self, answer: Callable[[Request, ConsentError], DecideResult], err: ConsentError
    ) -> list[DecideResult]:
        """When the chunk could not reach the sidecar: `answer(request, err)` for each encodable entry."""
        local = self.local
        return [local[i] if i in local else answer(r, err) for i, r in enumerate(self.requests)]


def batches(requests: Iterable[RequestLike], size: int) -> Iterator[Chunk]:
    """`requests` in chunks of `size`, each encoded when it is reached.

    Every request is converted (TypeError for what is not one) before the first chunk is
    yielded, so a bad item fails the call before any RPC is made.
    """
    reqs = [as_request(r) for r in requests]
    for start in range(0, len(reqs), size):
        chunk = reqs[start : start + size]
        msgs: list[decision_pb2.DecideRequest] = []
        local: dict[int, DecideResult] = {}
        for i, req in enumerate(chunk):
            try:
                msgs.append(to_proto(req))
            except InvalidArgument as e:
                local[i] = DecideResult(error=e.message)
        message = decision_pb2.DecideBatchRequest(requests=msgs) if msgs else None
        yield Chunk(chunk, message, local)
