"""ConsentClient (consent_client.client) against a real sidecar, on TCP and a unix socket.

Covers the wire semantics through the client, decide_many, the pipelined sync stream and its
recovery after a restart, connections=N, and deadlines (a stopped sidecar process). The
sidecar is `consent_sidecar.process.server.serve` on its own event loop in a thread
(`support.ServerThread`), or the `consent-sidecar` console script where a process must be
frozen. Every wait is bounded; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from consent_client import (
    AsyncConsentClient,
    ClientClosedError,
    ConsentClient,
    DeadlineExceeded,
    DecideResult,
    EmbeddedDecider,
    InvalidArgument,
    Reason,
    Request,
    RetryPolicy,
)
from serving import serve_process

from .support import FULL, WAIT, ServerThread, free_port, workload


def test_a_closed_client_refuses_calls() -> None:
    c = ConsentClient(f"127.0.0.1:{free_port()}")
    with c:
        pass
    with pytest.raises(ClientClosedError):
        c.decide(["amplitude"])
    with pytest.raises(ClientClosedError):
        c.stream([])
    c.close()  # idempotent


def test_decide_over_tcp_and_unix(client: ConsentClient, mapping_file: Path) -> None:
    consent = {"C0001": True, "C0002": True, "C0004": False}
    result = client.decide(["amplitude", "google-ads", "aws-s3", "snowflake", "brand-new"], consent)
    assert result.allowed == ("amplitude", "aws-s3", "snowflake", "brand-new")
    assert result.blocked == ("google-ads",)
    assert result.decisions == ()
    assert not result.degraded and result.failure is None and result.ok
    assert result.policy is not None
    assert result.policy.generation >= 1
    assert result.policy.digest == EmbeddedDecider(mapping_file).policy.digest


def test_explain_gives_typed_reasons_in_request_order(client: ConsentClient) -> None:
    result = client.decide(
        ["google-ads", "amplitude", "aws-s3", "old-pixel", "braze", "hotjar"], {"C0002": True, "C0003": True},
        explain=True,
    )
    by = {d.destination: d for d in result.decisions}
    assert [d.destination for d in result.decisions] == ["google-ads", "amplitude", "aws-s3", "old-pixel", "braze",
                                                         "hotjar"]
    assert by["google-ads"].reason is Reason.DENIED
    assert by["google-ads"].missing_categories == ("C0004",)
    assert by["amplitude"].reason is Reason.GRANTED
    assert by["amplitude"].shadow_missing_categories == ("C0006",)
    assert by["aws-s3"].reason is Reason.EXEMPT
    assert by["old-pixel"].reason is Reason.UNMAPPED
    assert by["braze"].reason is Reason.GRANTED  # resolution any
    assert by["braze"].reason == "REASON_GRANTED"  # a str enum of the proto names
    assert by["hotjar"].reason is Reason.UNMAPPED


def test_no_consent_object_allows_all_and_empty_request_means_every_known_destination(client: ConsentClient) -> None:
    everything = client.decide([], None)
    assert everything.blocked == ()
    assert everything.allowed == tuple(sorted(everything.allowed))
    assert {"aws-s3", "snowflake", "old-pixel", "hotjar"} <= set(everything.allowed)
    granted_nothing = client.decide([], {})
    assert "google-ads" in granted_nothing.blocked and "aws-s3" in granted_nothing.allowed


def test_decide_event_reads_context_consent_and_honours_integrations(client: ConsentClient) -> None:
    event = {
        "type": "track",
        "event": "Order Completed",
        "context": {"consent": {"categoryPreferences": {"C0002": True, "C0004": True}}},
        "integrations": {"amplitude": False},
    }
    result = client.decide_event(event, ["amplitude", "google-ads", "mixpanel"], explain=True)
    assert result.allowed == ("google-ads", "mixpanel")
    assert result.blocked == ("amplitude",)
    assert result.decisions[0].reason is Reason.DISABLED_BY_EVENT
    raw = client.decide_event(b'{"type":"identify"}', ["google-ads"])  # raw JSON, no consent object
    assert raw.allowed == ("google-ads",)


def test_malformed_input_raises_invalid_argument_never_a_grpc_error(client: ConsentClient) -> None:
    with pytest.raises(InvalidArgument, match=r"destinations\[1\]") as info:
        client.decide(["amplitude", ""], {})
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert not isinstance(info.value, grpc.RpcError)
    with pytest.raises(InvalidArgument, match="categoryPreferences"):
        client.decide_event({"context": {"consent": {"categoryPreferences": {"C0002": "yes"}}}}, ["amplitude"])
    for bad in ("yes", 1, None):  # strict booleans, like the embedded decider
        with pytest.raises(InvalidArgument, match=r"consent\.category_preferences\.C0002: must be a boolean"):
            client.decide(["amplitude"], {"C0002": bad})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        client.decide("amplitude")  # type: ignore[arg-type]


def test_decide_many_keeps_order_chunks_and_reports_bad_entries_inline(target: str) -> None:
    requests: list[Any] = [
        Request(("amplitude", "google-ads"), {"C0002": True}),
        Request(("amplitude",), {"C0002": True}, explain=True),
        Request(("",), {}),  # invalid on the sidecar
        {"type": "track", "context": {"consent": {"categoryPreferences": {"C0004": True}}}},  # every destination
        Request(("amplitude",), {"C0002": "no"}),  # type: ignore[dict-item]  # cannot even be encoded
        Request(("google-ads",), None),
        Request.for_event({"type": "track", "integrations": {"All": False}}, ["aws-s3"]),
    ]
    with ConsentClient(target, timeout=5.0, batch_size=3, failure_policy="raise") as c:
        results = c.decide_many(requests)
        singles = [c.decide_request(r) if i not in (2, 4) else None for i, r in enumerate(requests)]
    assert len(results) == len(requests)
    assert results[0].allowed == ("amplitude",) and results[0].blocked == ("google-ads",)
    assert results[1].decisions[0].reason is Reason.GRANTED
    assert results[2].error is not None and "requests[" in results[2].error and "destinations[0]" in results[2].error
    assert not results[2].ok
    with pytest.raises(InvalidArgument):
        results[2].raise_for_error()
    assert "google-ads" in results[3].allowed and "amplitude" in results[3].blocked
    assert results[4].error is not None and "consent" in results[4].error
    assert results[5].allowed == ("google-ads",)
    assert results[6].blocked == ("aws-s3",)
    for i, single in enumerate(singles):
        if single is not None:
            assert (results[i].allowed, results[i].blocked, results[i].decisions) == (
                single.allowed, single.blocked, single.decisions,
            )


def test_sync_stream_answers_in_order_within_a_bounded_window(client: ConsentClient) -> None:
    reqs = workload(300)
    reqs[17] = Request(("",), {})  # an invalid entry does not break the stream
    expected = client.decide_many(reqs)
    consumed = 0

    def source() -> Iterator[Request]:
        nonlocal consumed
        for r in reqs:
            consumed += 1
            yield r

    got: list[DecideResult] = []
    with client.stream(source(), window=8) as results:
        for r in results:
            got.append(r)
            assert consumed - len(got) <= 8  # read-ahead never exceeds the window
    assert len(got) == len(reqs)
    assert got[17].error is not None
    strip = [(r.allowed, r.blocked, r.decisions, r.error is None) for r in got]
    assert strip == [(r.allowed, r.blocked, r.decisions, r.error is None) for r in expected]


def test_sync_stream_of_nothing_yields_nothing(client: ConsentClient) -> None:
    with client.stream([]) as results:
        assert list(results) == []


def test_sync_stream_can_be_left_early(client: ConsentClient) -> None:
    with client.stream(workload(50), window=4) as results:
        first = next(iter(results))
    assert first.ok
    assert client.decide(["amplitude"], {"C0002": True}).allowed == ("amplitude",)


def _client_connections_to(port: int) -> int:
    """Established TCP connections whose far end is `port` (Linux's /proc/net/tcp and tcp6:
    gRPC's sockets are dual-stack, 127.0.0.1 shows as a v4-mapped IPv6 address)."""
    rows = [line.split() for name in ("tcp", "tcp6") for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]]
    return sum(1 for row in rows if row[3] == "01" and int(row[2].rsplit(":", 1)[1], 16) == port)


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc/net/tcp")
@pytest.mark.parametrize("connections", [1, 3])
async def test_calls_take_turns_over_the_connections_asked_for(mapping_file: Path, connections: int) -> None:
    """`serve --workers N` gives each connection to one worker: the client must really open N."""
    sync_port, async_port = free_port(), free_port()
    with ServerThread(mapping_file, [f"127.0.0.1:{sync_port}", f"127.0.0.1:{async_port}"]):
        with ConsentClient(f"127.0.0.1:{sync_port}", connections=connections, failure_policy="raise") as c:
            for _ in range(2 * connections):
                assert c.decide(["amplitude"], FULL).allowed == ("amplitude",)
            with c.stream([Request(("amplitude",), FULL)]) as results:
                assert [r.allowed for r in results] == [("amplitude",)]
            assert _client_connections_to(sync_port) == connections
        async with AsyncConsentClient(f"127.0.0.1:{async_port}", connections=connections,
                                      failure_policy="raise") as ac:
            answers = await asyncio.gather(*(ac.decide(["amplitude"], FULL) for _ in range(2 * connections)))
            assert {r.allowed for r in answers} == {("amplitude",)}
            assert _client_connections_to(async_port) == connections


def test_a_frozen_sidecar_exceeds_the_deadline(mapping_file: Path, tmp_path: Path) -> None:
    target = f"127.0.0.1:{free_port()}"
    # A child process, so that it can be frozen with SIGSTOP.
    with serve_process(tmp_path, "--listen", target, "--grace-period", "0.2", mapping=mapping_file.read_text()) as sc:
        sc.wait_started()
        with (
            ConsentClient(target, timeout=0.3, failure_policy="raise") as raising,
            ConsentClient(target, timeout=0.3) as closed,
        ):
            assert raising.decide(["google-ads"], {"C0004": True}, timeout=WAIT).allowed == ("google-ads",)
            assert closed.decide(["google-ads"], {"C0004": True}, timeout=WAIT).allowed == ("google-ads",)
            os.kill(sc.process.pid, signal.SIGSTOP)
            try:
                with pytest.raises(DeadlineExceeded) as info:
                    raising.decide(["google-ads"], {"C0004": True})
                assert info.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
                assert info.value.attempts == 1  # a deadline is never retried
                with pytest.raises(DeadlineExceeded):
                    raising.decide(["google-ads"], {"C0004": True}, timeout=0.05)  # per-call override
                degraded = closed.decide(["google-ads"], {"C0004": True})
                assert degraded.degraded and degraded.blocked == ("google-ads",)
                assert degraded.failure is not None and degraded.failure.startswith("DEADLINE_EXCEEDED")
                with closed.stream([Request(("google-ads",), {"C0004": True})] * 3, timeout=0.3) as results:
                    streamed = list(results)
                assert [r.degraded for r in streamed] == [True, True, True]
            finally:
                os.kill(sc.process.pid, signal.SIGCONT)
            assert raising.decide(["google-ads"], {"C0004": True}, timeout=WAIT).allowed == ("google-ads",)


def test_a_deadline_must_be_positive(client: ConsentClient) -> None:
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="timeout"):
            client.decide(["amplitude"], {}, timeout=bad)


def test_sync_stream_resends_in_flight_requests_after_a_restart(mapping_file: Path) -> None:
    target = f"127.0.0.1:{free_port()}"
    server = ServerThread(mapping_file, [target]).start()
    reqs = workload(120)
    retried: list[str] = []
    try:
        retry = RetryPolicy(max_attempts=100, initial_backoff=0.02, max_backoff=0.1)
        with ConsentClient(
            target, timeout=WAIT, retry=retry, failure_policy="raise", on_retry=lambda a, e, d: retried.append(str(e))
        ) as c:
            expected = c.decide_many(reqs)

            def source() -> Iterator[Request]:
                for i, r in enumerate(reqs):
                    if i == 60:  # the sidecar restarts with requests in flight
                        server.stop()
                        server.start()
                    yield r

            with c.stream(source(), window=16) as results:
                got = list(results)
    finally:
        server.stop()
    assert [(r.allowed, r.blocked, r.decisions) for r in got] == [
        (r.allowed, r.blocked, r.decisions) for r in expected
    ]
    assert not any(r.degraded for r in got)
    assert retried and retried[0].startswith("UNAVAILABLE")  # the stream broke and was reopened
