"""DecisionService over real gRPC (loopback TCP and a unix socket): the three RPCs, explain, errors, limits."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
import pytest
from consent.v1 import decision_pb2, decision_pb2_grpc
from consent_core import errors
from consent_core.index import Reason
from consent_core.limits import Limits

from consent_sidecar.services.status import status_of

if TYPE_CHECKING:
    from conftest import RunningSidecar, StartSidecar

TRANSPORTS = ("tcp", "unix")

Req = decision_pb2.DecideRequest
R = decision_pb2.Reason

KNOWN = ["amplitude", "aws-s3", "braze", "google-ads", "hotjar", "mixpanel"]


def stub(channel: grpc.aio.Channel) -> decision_pb2_grpc.DecisionServiceStub:
    return decision_pb2_grpc.DecisionServiceStub(channel)


def consent(**prefs: bool) -> decision_pb2.Consent:
    return decision_pb2.Consent(category_preferences=prefs)


def event(**fields: Any) -> bytes:
    return json.dumps({"type": "track", "event": "Order Completed", **fields}).encode()


def with_prefs(prefs: dict[str, Any], **fields: Any) -> bytes:
    return event(context={"consent": {"categoryPreferences": prefs}}, **fields)


async def assert_still_serving(channel: grpc.aio.Channel) -> None:
    r = await stub(channel).Decide(Req(consent=consent(C0002=True), destinations=["amplitude"]), timeout=5)
    assert list(r.allowed) == ["amplitude"]


# -- Decide ---------------------------------------------------------------------------------


async def test_no_consent_object_allows_every_destination(channel: grpc.aio.Channel) -> None:
    r = await stub(channel).Decide(Req(destinations=["google-ads", "amplitude"]), timeout=5)
    assert list(r.allowed) == ["google-ads", "amplitude"]
    assert list(r.blocked) == []
    assert len(r.decisions) == 0


async def test_consent_blocks_ungranted_categories_in_request_order(
    channel: grpc.aio.Channel, sidecar: RunningSidecar
) -> None:
    r = await stub(channel).Decide(
        Req(consent=consent(C0002=True, C0004=False), destinations=["google-ads", "amplitude", "mixpanel", "aws-s3"]),
        timeout=5,
    )
    assert list(r.allowed) == ["amplitude", "mixpanel", "aws-s3"]
    assert list(r.blocked) == ["google-ads"]
    snap = sidecar.store.current
    assert (r.policy.generation, r.policy.digest) == (1, snap.digest)
    assert len(r.policy.digest) == 64


async def test_an_empty_consent_object_grants_nothing(channel: grpc.aio.Channel) -> None:
    r = await stub(channel).Decide(Req(consent=consent(), destinations=["amplitude", "aws-s3", "unknown"]), timeout=5)
    assert list(r.allowed) == ["aws-s3", "unknown"]
    assert list(r.blocked) == ["amplitude"]


async def test_empty_destination_list_means_every_known_destination_sorted(channel: grpc.aio.Channel) -> None:
    r = await stub(channel).Decide(Req(consent=consent(C0002=True), explain=True), timeout=5)
    assert [d.destination for d in r.decisions] == KNOWN
    assert list(r.allowed) == ["amplitude", "aws-s3", "hotjar", "mixpanel"]
    assert list(r.blocked) == ["braze", "google-ads"]
    r = await stub(channel).Decide(Req(), timeout=5)
    assert list(r.allowed) == KNOWN


async def test_duplicates_are_each_decided_and_listed(channel: grpc.aio.Channel) -> None:
    r = await stub(channel).Decide(
        Req(consent=consent(C0002=True), destinations=["google-ads", "amplitude", "google-ads", "amplitude"]),
        timeout=5,
    )
    assert list(r.allowed) == ["amplitude", "amplitude"]
    assert list(r.blocked) == ["google-ads", "google-ads"]


async def test_an_instance_is_decided_as_its_destination_and_listed_as_given(channel: grpc.aio.Channel) -> None:
    r = await stub(channel).Decide(
        Req(consent=consent(C0004=True), destinations=["google-ads/eu", "amplitude/us", "aws-s3/x"], explain=True),
        timeout=5,
    )
    assert list(r.allowed) == ["google-ads/eu", "aws-s3/x"]
    assert list(r.blocked) == ["amplitude/us"]
    assert [(d.destination, d.reason) for d in r.decisions] == [
        ("google-ads/eu", R.REASON_GRANTED),
        ("amplitude/us", R.REASON_DENIED),
        ("aws-s3/x", R.REASON_EXEMPT),
    ]


async def test_explain_reports_reasons_and_categories(channel: grpc.aio.Channel) -> None:
    r = await stub(channel).Decide(
        Req(
            consent=consent(C0002=True),
            destinations=["amplitude", "google-ads", "braze", "aws-s3", "hotjar", "nobody"],
            explain=True,
        ),
        timeout=5,
    )
    got = {
        d.destination: (
            d.allowed, d.reason, list(d.required_categories), list(d.missing_categories),
            list(d.shadow_missing_categories),
        )
        for d in r.decisions
    }
    assert got == {
        "amplitude": (True, R.REASON_GRANTED, ["C0002"], [], ["C0003"]),
        "google-ads": (False, R.REASON_DENIED, ["C0004"], ["C0004"], []),
        "braze": (False, R.REASON_DENIED, ["C0004"], ["C0004"], []),
        "aws-s3": (True, R.REASON_EXEMPT, [], [], []),
        "hotjar": (True, R.REASON_UNMAPPED, [], [], ["C0003"]),
        "nobody": (True, R.REASON_UNMAPPED, [], [], []),
    }
    assert [d.destination for d in r.decisions] == ["amplitude", "google-ads", "braze", "aws-s3", "hotjar", "nobody"]
    assert list(r.blocked) == ["google-ads", "braze"]


def test_core_reason_values_equal_the_proto_enum() -> None:
    for reason in Reason:
        assert R.Name(reason.value) == f"REASON_{reason.name}"


async def test_segment_event_reads_consent_and_honours_integrations(channel: grpc.aio.Channel) -> None:
    raw = with_prefs({"C0002": True, "C0004": True}, integrations={"mixpanel": False, "braze": {"opt": 1}})
    r = await stub(channel).Decide(
        Req(segment_event=raw, destinations=["amplitude", "mixpanel", "google-ads", "braze"], explain=True), timeout=5
    )
    assert list(r.allowed) == ["amplitude", "google-ads", "braze"]
    assert list(r.blocked) == ["mixpanel"]
    assert r.decisions[1].reason == R.REASON_DISABLED_BY_EVENT


async def test_segment_event_all_false_blocks_all_but_those_set_true(channel: grpc.aio.Channel) -> None:
    raw = event(integrations={"All": False, "amplitude": True, "aws-s3": {}})
    r = await stub(channel).Decide(Req(segment_event=raw, destinations=["amplitude", "aws-s3", "mixpanel"]), timeout=5)
    assert list(r.allowed) == ["amplitude", "aws-s3"]
    assert list(r.blocked) == ["mixpanel"]


async def test_segment_event_without_consent_is_not_enforced(channel: grpc.aio.Channel) -> None:
    r = await stub(channel).Decide(Req(segment_event=event(), destinations=["google-ads"], explain=True), timeout=5)
    assert list(r.allowed) == ["google-ads"]
    assert r.decisions[0].reason == R.REASON_NO_CONSENT


async def test_the_preference_event_is_delivered_regardless_of_consent(channel: grpc.aio.Channel) -> None:
    raw = json.dumps(
        {
            "type": "track",
            "event": "Segment Consent Preference Updated",
            "context": {"consent": {"categoryPreferences": {"C0002": False}}},
            "integrations": {"mixpanel": False},
        }
    ).encode()
    r = await stub(channel).Decide(
        Req(segment_event=raw, destinations=["amplitude", "mixpanel", "google-ads"], explain=True), timeout=5
    )
    assert list(r.allowed) == ["amplitude", "google-ads"]
    assert list(r.blocked) == ["mixpanel"]
    assert [d.reason for d in r.decisions] == [
        R.REASON_PREFERENCE_EVENT, R.REASON_DISABLED_BY_EVENT, R.REASON_PREFERENCE_EVENT,
    ]
    assert all(not d.required_categories for d in r.decisions)


# -- invalid input --------------------------------------------------------------------------

BAD_REQUESTS = [
    pytest.param(
        Req(destinations=["amplitude", ""]), "destinations[1]: destination id must not be empty", id="empty-id"
    ),
    pytest.param(Req(destinations=["x" * 257]), "destinations[0]: destination id longer than 256 bytes", id="long-id"),
    pytest.param(Req(segment_event=b"{not json", destinations=["a"]), "segment_event: not valid JSON", id="bad-json"),
    pytest.param(Req(segment_event=b"[1, 2]"), "segment_event: must be a JSON object", id="non-object-json"),
    pytest.param(Req(segment_event=b"\xff\xfe"), "segment_event: not valid JSON", id="not-utf8"),
    pytest.param(
        Req(segment_event=b'{"a": ' + b"[" * 70 + b"]" * 70 + b"}"),
        "segment_event: nested deeper than 64", id="too-deep",
    ),
    pytest.param(
        Req(segment_event=with_prefs({"C0002": "yes"})),
        "segment_event.context.consent.categoryPreferences.C0002: must be a boolean", id="non-bool-preference",
    ),
    pytest.param(
        Req(segment_event=event(context={"consent": {"categoryPreferences": [True]}})),
        "segment_event.context.consent.categoryPreferences: must be an object of booleans", id="preferences-list",
    ),
    pytest.param(
        Req(segment_event=event(integrations=["mixpanel"])), "segment_event.integrations: must be an object",
        id="non-object-integrations",
    ),
]


@pytest.mark.parametrize(("request_", "message"), BAD_REQUESTS)
async def test_bad_input_is_invalid_argument_naming_the_field(
    channel: grpc.aio.Channel, request_: decision_pb2.DecideRequest, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub(channel).Decide(request_, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (info.value.details() or "")
    await assert_still_serving(channel)


@pytest.fixture
async def small(start_sidecar: StartSidecar) -> AsyncIterator[RunningSidecar]:
    """A sidecar with deliberately small limits."""
    limits = Limits(max_destinations=3, max_batch=2, max_message_bytes=16 * 1024)
    async with start_sidecar(limits=limits) as running:
        yield running


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_too_many_destinations_is_invalid_argument(small: RunningSidecar, transport: str) -> None:
    ch = small.channel(transport)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub(ch).Decide(Req(destinations=["a", "b", "c", "d"]), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "destinations: too many destinations: 4 > 3" in (info.value.details() or "")
    await assert_still_serving(ch)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_batch_over_the_limit_is_invalid_argument(small: RunningSidecar, transport: str) -> None:
    ch = small.channel(transport)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub(ch).DecideBatch(decision_pb2.DecideBatchRequest(requests=[Req()] * 3), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "requests: too many entries: 3 > 2" in (info.value.details() or "")
    await assert_still_serving(ch)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_oversize_message_is_resource_exhausted(small: RunningSidecar, transport: str) -> None:
    ch = small.channel(transport)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub(ch).Decide(Req(segment_event=event(pad="x" * 32 * 1024)), timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.details()
    await assert_still_serving(ch)


async def test_an_oversize_stream_message_fails_only_that_stream(small: RunningSidecar) -> None:
    ch = small.tcp
    call = stub(ch).DecideStream(timeout=5)
    await call.write(Req(segment_event=event(pad="x" * 32 * 1024)))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await assert_still_serving(ch)


# -- DecideBatch ----------------------------------------------------------------------------


async def test_batch_decides_every_entry_against_one_snapshot(channel: grpc.aio.Channel) -> None:
    batch = decision_pb2.DecideBatchRequest(
        requests=[
            Req(consent=consent(C0002=True), destinations=["amplitude", "google-ads"]),
            Req(destinations=["google-ads"]),
            Req(segment_event=with_prefs({"C0004": True}), destinations=["google-ads", "amplitude"], explain=True),
        ]
    )
    r = await stub(channel).DecideBatch(batch, timeout=5)
    assert [(list(x.allowed), list(x.blocked)) for x in r.responses] == [
        (["amplitude"], ["google-ads"]),
        (["google-ads"], []),
        (["google-ads"], ["amplitude"]),
    ]
    assert r.policy.generation == 1 and len(r.policy.digest) == 64
    assert all(x.policy == r.policy for x in r.responses)
    assert [len(x.decisions) for x in r.responses] == [0, 0, 2]
    assert all(x.error == "" for x in r.responses)


async def test_batch_entry_errors_name_the_entry_and_the_rest_are_decided(channel: grpc.aio.Channel) -> None:
    batch = decision_pb2.DecideBatchRequest(
        requests=[
            Req(consent=consent(C0002=True), destinations=["amplitude"]),
            Req(segment_event=b"nope"),
            Req(destinations=["google-ads"]),
            Req(destinations=[""]),
            Req(segment_event=with_prefs({"C0002": 1}), destinations=["amplitude"]),
        ]
    )
    r = await stub(channel).DecideBatch(batch, timeout=5)
    assert len(r.responses) == 5
    errors = [x.error for x in r.responses]
    assert errors[0] == errors[2] == ""
    assert errors[1].startswith("requests[1].segment_event: not valid JSON")
    assert errors[3] == "requests[3].destinations[0]: destination id must not be empty"
    prefs = "requests[4].segment_event.context.consent.categoryPreferences"
    assert errors[4].startswith(f"{prefs}.C0002: must be a boolean")
    assert list(r.responses[0].allowed) == ["amplitude"]
    assert list(r.responses[2].allowed) == ["google-ads"]
    bad = r.responses[3]
    assert not bad.allowed and not bad.blocked and not bad.decisions
    await assert_still_serving(channel)


async def test_an_empty_batch_is_answered_with_the_policy(channel: grpc.aio.Channel) -> None:
    r = await stub(channel).DecideBatch(decision_pb2.DecideBatchRequest(), timeout=5)
    assert len(r.responses) == 0
    assert r.policy.generation == 1


# -- DecideStream ---------------------------------------------------------------------------


async def test_stream_answers_one_response_per_request_in_order(channel: grpc.aio.Channel) -> None:
    requests = [
        Req(consent=consent(C0002=True), destinations=["amplitude", "google-ads"]),
        Req(destinations=["x", ""]),  # invalid: answered with error, the stream goes on
        Req(consent=consent(C0004=True), destinations=["google-ads"], explain=True),
        Req(segment_event=b"[]"),
        Req(destinations=["mixpanel"]),
    ]
    responses = [r async for r in stub(channel).DecideStream(iter(requests), timeout=5)]
    assert len(responses) == 5
    assert (list(responses[0].allowed), list(responses[0].blocked)) == (["amplitude"], ["google-ads"])
    assert responses[1].error == "destinations[1]: destination id must not be empty"
    assert list(responses[2].allowed) == ["google-ads"] and responses[2].decisions[0].reason == R.REASON_GRANTED
    assert responses[3].error == "segment_event: must be a JSON object"
    assert list(responses[4].allowed) == ["mixpanel"]
    assert all(r.policy.generation == 1 for i, r in enumerate(responses) if i not in (1, 3))
    await assert_still_serving(channel)


async def test_stream_is_interactive_read_decide_write(channel: grpc.aio.Channel) -> None:
    # Request/response in lock step proves the server answers each message without waiting for more.
    call = stub(channel).DecideStream(timeout=10)
    for i in range(50):
        dest = "google-ads" if i % 2 else ""
        await call.write(Req(consent=consent(C0004=True), destinations=[dest]))
        r = await call.read()
        if i % 2:
            assert list(r.allowed) == ["google-ads"]
        else:
            assert r.error == "destinations[0]: destination id must not be empty"
    await call.done_writing()
    assert await call.read() == grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK


async def test_stream_handles_many_messages_with_backpressure(channel: grpc.aio.Channel) -> None:
    n = 2000
    requests = (Req(consent=consent(C0002=True), destinations=["amplitude", "google-ads"]) for _ in range(n))
    count = 0
    async for r in stub(channel).DecideStream(requests, timeout=30):
        assert list(r.blocked) == ["google-ads"]
        count += 1
    assert count == n


# -- status codes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.InvalidArgument("destinations[0]", "empty"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.MappingError([errors.Problem("categories[0].id", "bad")]), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound("category C9 not found"), grpc.StatusCode.NOT_FOUND),
        (errors.AlreadyExists("name taken"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.Aborted("stale etag"), grpc.StatusCode.ABORTED),
        (errors.FailedPrecondition("confirm_name"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.Unauthenticated("no token"), grpc.StatusCode.UNAUTHENTICATED),
        (errors.PermissionDenied("member"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.Unavailable("disk full"), grpc.StatusCode.UNAVAILABLE),
        (errors.ResourceExhausted("too big"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.SidecarError(), grpc.StatusCode.INTERNAL),
    ],
)
def test_each_core_error_has_one_status_code_and_a_message(exc: errors.SidecarError, code: grpc.StatusCode) -> None:
    got, message = status_of(exc)
    assert got == code
    assert message


def test_a_subclass_inherits_its_parents_status_code() -> None:
    class StaleFile(errors.Aborted):
        pass

    assert status_of(StaleFile("changed on disk"))[0] == grpc.StatusCode.ABORTED
