"""consent_client._policy: the clients' options and every failure policy, with the sidecar stopped.

`stopped` is a target whose sidecar answered once and then stopped; the policies answer for
it (degraded) or raise, per entry in batches and streams, in both clients; a connected client
degrades while its sidecar is down and recovers on the same channel.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from consent_client import (
    AsyncConsentClient,
    ConsentClient,
    EmbeddedDecider,
    FailurePolicy,
    InvalidArgument,
    Reason,
    Request,
    RetryPolicy,
    Unavailable,
)

from .support import WAIT, ServerThread, free_port


def test_embedded_failure_policy_needs_a_mapping() -> None:
    with pytest.raises(ValueError, match="mappings_path"):
        ConsentClient("127.0.0.1:1", failure_policy="embedded")
    with pytest.raises(ValueError):
        ConsentClient("127.0.0.1:1", failure_policy="sometimes")


def test_connections_must_be_positive() -> None:
    with pytest.raises(ValueError, match="connections"):
        ConsentClient("127.0.0.1:1", connections=0)


@pytest.fixture(scope="module")
def stopped(mapping_file: Path) -> Iterator[str]:
    """A target whose sidecar answered once and then stopped."""
    target = f"127.0.0.1:{free_port()}"
    with ServerThread(mapping_file, [target]), ConsentClient(target, timeout=WAIT, failure_policy="raise") as c:
        assert c.decide(["amplitude"], {}).blocked == ("amplitude",)
    yield target


FAST_RETRY = RetryPolicy(max_attempts=2, initial_backoff=0.001, max_backoff=0.001)
ASKED = ["google-ads", "amplitude", "aws-s3", "old-pixel", "brand-new", "braze"]
CONSENT = {"C0002": True, "C0004": True}


def _dead_client(target: str, policy: str, mapping: Path | None = None) -> ConsentClient:
    return ConsentClient(target, timeout=2.0, retry=FAST_RETRY, failure_policy=policy, mappings_path=mapping)


def test_fail_closed_without_a_mapping_blocks_every_requested_destination(stopped: str) -> None:
    with _dead_client(stopped, "fail_closed") as c:
        assert c.failure_policy is FailurePolicy.FAIL_CLOSED
        r = c.decide(ASKED, CONSENT, explain=True)
        assert r.degraded and r.failure is not None and r.failure.startswith("UNAVAILABLE")
        assert r.allowed == () and r.blocked == tuple(ASKED)
        assert {d.reason for d in r.decisions} == {Reason.UNSPECIFIED}
        assert r.policy is None
        assert c.decide([], None).allowed == ()  # nothing known, nothing allowed
        with pytest.raises(InvalidArgument):  # still validated like the sidecar would
            c.decide([""], {})


def test_default_policy_is_fail_closed(stopped: str) -> None:
    with ConsentClient(stopped, timeout=2.0, retry=FAST_RETRY) as c:
        r = c.decide(["amplitude"], None)
    assert r.degraded and r.blocked == ("amplitude",)


def test_fail_closed_with_a_mapping_blocks_only_what_may_require_consent(stopped: str, mapping_file: Path) -> None:
    with _dead_client(stopped, "fail_closed", mapping_file) as c:
        r = c.decide(ASKED, CONSENT, explain=True)
        assert r.degraded
        assert r.allowed == ("aws-s3", "old-pixel", "brand-new")  # exempt, disabled-only, unknown (allow)
        assert r.blocked == ("google-ads", "amplitude", "braze")
        ev = c.decide_event({"type": "track", "integrations": {"aws-s3": False}}, ["aws-s3", "old-pixel"])
        assert ev.blocked == ("aws-s3",) and ev.allowed == ("old-pixel",)
        assert r.policy == EmbeddedDecider(mapping_file).policy


def test_fail_open_allows_every_requested_destination_but_obeys_integrations(stopped: str) -> None:
    with _dead_client(stopped, "fail_open") as c:
        r = c.decide(ASKED, {}, explain=True)
        assert r.degraded and r.allowed == tuple(ASKED) and r.blocked == ()
        assert {d.reason for d in r.decisions} == {Reason.UNSPECIFIED}
        ev = c.decide_event({"type": "track", "integrations": {"braze": False}}, ["braze", "amplitude"], explain=True)
        assert ev.allowed == ("amplitude",) and ev.blocked == ("braze",)
        assert ev.decisions[0].reason is Reason.DISABLED_BY_EVENT


def test_embedded_policy_answers_like_the_mapping(stopped: str, mapping_file: Path) -> None:
    local = EmbeddedDecider(mapping_file)
    with _dead_client(stopped, "embedded", mapping_file) as c:
        r = c.decide(ASKED, CONSENT, explain=True)
        many = c.decide_many([Request(tuple(ASKED), CONSENT), Request(("",), {})])
    expected = local.decide(ASKED, CONSENT, explain=True)
    assert r.degraded
    assert (r.allowed, r.blocked, r.decisions, r.policy) == (
        expected.allowed, expected.blocked, expected.decisions, expected.policy,
    )
    assert many[0].degraded and many[0].allowed == expected.allowed
    assert many[1].error is not None


def test_raise_policy_raises_unavailable(stopped: str) -> None:
    with _dead_client(stopped, "raise") as c, pytest.raises(Unavailable) as info:
        c.decide(ASKED, CONSENT)
    assert info.value.attempts == FAST_RETRY.max_attempts


def test_batches_and_streams_fall_back_per_entry(stopped: str) -> None:
    with _dead_client(stopped, "fail_open") as c:
        many = c.decide_many([Request(("a",), {}), Request(("",), {}), Request(("b",), None)])
        assert [r.allowed for r in many] == [("a",), (), ("b",)]
        assert [r.degraded for r in many] == [True, False, True]
        assert many[1].error is not None
        with c.stream([Request(("a",), {}), Request(("b",), {})], window=1) as results:
            streamed = list(results)
        assert [(r.allowed, r.degraded) for r in streamed] == [(("a",), True), (("b",), True)]


async def test_async_failure_policies(stopped: str, mapping_file: Path) -> None:
    async with AsyncConsentClient(stopped, timeout=2.0, retry=FAST_RETRY) as closed, \
            AsyncConsentClient(stopped, timeout=2.0, retry=FAST_RETRY, failure_policy="raise") as raising:
        r = await closed.decide(["amplitude", "aws-s3"], {"C0002": True})
        assert r.degraded and r.blocked == ("amplitude", "aws-s3")
        many = await closed.decide_many([Request(("a",), {})] * 3)
        assert all(m.degraded for m in many)
        async with closed.stream(window=4) as s:
            streamed = await asyncio.gather(*(s.decide(["x"], {}) for _ in range(5)))
        assert all(m.degraded and m.blocked == ("x",) for m in streamed)
        with pytest.raises(Unavailable):
            await raising.decide(["amplitude"], {})


def test_a_connected_client_degrades_while_the_sidecar_is_down_then_recovers(mapping_file: Path) -> None:
    target = f"127.0.0.1:{free_port()}"
    server = ServerThread(mapping_file, [target]).start()
    patient = RetryPolicy(max_attempts=1000, initial_backoff=0.02, max_backoff=0.1)
    try:
        with ConsentClient(target, timeout=0.5, retry=patient) as c:
            assert not c.decide(["amplitude"], {"C0002": True}, timeout=WAIT).degraded
            server.stop()
            down = c.decide(["amplitude"], {"C0002": True})  # retried until the 0.5 s deadline, then fail_closed
            assert down.degraded and down.blocked == ("amplitude",)
            assert down.failure is not None and down.failure.startswith("UNAVAILABLE")
            server.start()
            # Same client, same channel: it reconnects within the retry budget of a longer deadline.
            up = c.decide(["amplitude"], {"C0002": True}, timeout=WAIT)
            assert not up.degraded and up.allowed == ("amplitude",)
    finally:
        server.stop()
