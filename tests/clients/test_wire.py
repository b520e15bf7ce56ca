"""consent_client._wire: what a request may be, how it is encoded, and DecideBatch chunks in request order."""

from __future__ import annotations

import pytest
from consent.v1 import decision_pb2
from consent_client import ConsentClient, DecideResult, InvalidArgument, PolicyVersion, Request, Unavailable
from consent_client._wire import as_request, batches, encode_event, to_proto
from consent_client.errors import ConsentError, Internal

from .support import free_port


@pytest.mark.parametrize(
    "request_",
    [
        Request(("a", "b/eu"), {"C0001": True, "C0002": False}, explain=True),
        Request(("a",), {}),  # an empty consent object is still a consent object
        Request(("a",), None, b'{"type":"track"}'),
        Request(),  # no consent object, every known destination
    ],
)
def test_a_request_survives_the_wire_form(request_: Request) -> None:
    assert as_request(to_proto(request_)) == request_


def test_an_event_dict_is_a_request_for_every_known_destination() -> None:
    assert as_request({"type": "track"}) == Request(event={"type": "track"})
    with pytest.raises(TypeError, match="got list"):
        as_request([("a",)])  # type: ignore[arg-type]


def test_events_are_encoded_as_compact_utf8_json() -> None:
    assert encode_event({"a": "é", "b": [1, None]}) == '{"a":"é","b":[1,null]}'.encode()
    assert encode_event('{"x": 1}') == b'{"x": 1}'  # raw JSON is sent as given
    with pytest.raises(InvalidArgument, match="segment_event: not JSON-serialisable"):
        encode_event({"a": object()})


def test_batches_keep_request_order_and_answer_unencodable_entries_locally() -> None:
    reqs = [Request(("a",), {}), Request(("b",), {"C0002": "x"}), Request(("c",), None), Request(("d",), {})]  # type: ignore[dict-item]
    chunks = list(batches(reqs, 3))
    assert [c.requests for c in chunks] == [reqs[:3], reqs[3:]]
    first = chunks[0]
    assert first.message is not None and [m.destinations[0] for m in first.message.requests] == ["a", "c"]
    assert list(first.local) == [1] and "consent.category_preferences.C0002" in (first.local[1].error or "")

    answered = first.results(decision_pb2.DecideBatchResponse(
        responses=[decision_pb2.DecideResponse(allowed=["a"]), decision_pb2.DecideResponse(blocked=["c"])],
        policy=decision_pb2.PolicyVersion(generation=2, digest="d"),
    ))
    assert [(r.allowed, r.blocked, r.ok) for r in answered] == [(("a",), (), True), ((), (), False), ((), ("c",), True)]
    assert answered[0].policy == answered[2].policy == PolicyVersion(2, "d")  # the batch's one snapshot
    with pytest.raises(Internal, match="answered 1 entries for 2 requests"):
        first.results(decision_pb2.DecideBatchResponse(responses=[decision_pb2.DecideResponse()]))

    def blocked(r: Request, e: ConsentError) -> DecideResult:
        return DecideResult(blocked=r.destinations, failure=str(e))

    fell_back = first.fallback(blocked, Unavailable("down"))
    assert [(r.blocked, r.failure) for r in fell_back] == [
        (("a",), "UNAVAILABLE: down"), ((), None), (("c",), "UNAVAILABLE: down"),
    ]


def test_a_chunk_of_only_unencodable_entries_has_nothing_to_send() -> None:
    (chunk,) = batches([Request(("a",), {"C0002": 1})], 10)  # type: ignore[dict-item]
    assert chunk.message is None
    assert [r.error is not None for r in chunk.local_results()] == [True]


def test_a_batch_of_only_unencodable_entries_needs_no_sidecar() -> None:
    with ConsentClient(f"127.0.0.1:{free_port()}", failure_policy="raise") as c:
        results = c.decide_many([Request(("amplitude",), {"C0002": "x"})])  # type: ignore[dict-item]
    assert results[0].error is not None
