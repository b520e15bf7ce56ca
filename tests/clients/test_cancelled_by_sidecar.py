"""A sidecar that cancels calls (as one shutting down does) is a sidecar failure: the failure policy answers it.

The fake sidecar below answers every DecisionService call with CANCELLED, the status a server
sends for the calls it drops while stopping. Both clients, every RPC shape: `fail_closed`
answers degraded, `raise` raises; a call this process cancelled itself stays `Cancelled`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from consent_client import AsyncConsentClient, ConsentClient, ConsentError, Request, RetryPolicy, Unavailable
from consent_client._retry import LOCALLY_CANCELLED, sidecar_error
from consent_client.errors import Cancelled

from .support import FakeRpcError, free_port

NO_RETRY = RetryPolicy(max_attempts=1)
ASKED = ["google-ads", "amplitude"]
CONSENT = {"C0002": True}


@pytest.fixture(scope="module")
def cancelling() -> Iterator[str]:
    """A target whose every DecisionService call ends CANCELLED, like the calls a stopping server drops."""
    calls = threading.Semaphore(0)

    def cancel(request: Any, context: grpc.ServicerContext) -> bytes:
        calls.release()
        context.abort(grpc.StatusCode.CANCELLED, "CANCELLED")
        raise AssertionError("abort returns only by raising")

    def cancel_stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        next(requests, None)
        context.abort(grpc.StatusCode.CANCELLED, "CANCELLED")
        yield b""  # pragma: no cover - never reached

    handlers = {
        "Decide": grpc.unary_unary_rpc_method_handler(cancel),
        "DecideBatch": grpc.unary_unary_rpc_method_handler(cancel),
        "DecideStream": grpc.stream_stream_rpc_method_handler(cancel_stream),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("consent.v1.DecisionService", handlers),))
    target = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(target)
    server.start()
    try:
        yield target
    finally:
        server.stop(None)


def test_fail_closed_answers_every_rpc_shape_when_the_sidecar_cancels(cancelling: str) -> None:
    with ConsentClient(cancelling, timeout=5, retry=NO_RETRY, failure_policy="fail_closed") as c:
        one = c.decide(ASKED, CONSENT)
        many = c.decide_many([Request(ASKED, CONSENT), Request(["braze"], None)])
        with c.stream([Request(ASKED, CONSENT)]) as results:
            streamed = list(results)
    for r in (one, *many, *streamed):
        assert r.degraded and r.allowed == ()
        assert r.failure is not None and "cancelled" in r.failure
    assert one.blocked == tuple(ASKED) and many[1].blocked == ("braze",)


async def test_async_fail_closed_answers_when_the_sidecar_cancels(cancelling: str) -> None:
    async with AsyncConsentClient(cancelling, timeout=5, retry=NO_RETRY, failure_policy="fail_closed") as c:
        one = await c.decide(ASKED, CONSENT)
        many = await c.decide_many([Request(ASKED, CONSENT)])
        async with c.stream() as s:
            streamed = await asyncio.wait_for(s.decide(ASKED, CONSENT), timeout=10)
    for r in (one, *many, streamed):
        assert r.degraded and r.blocked == tuple(ASKED)


def test_raise_still_raises_when_the_sidecar_cancels(cancelling: str) -> None:
    with ConsentClient(cancelling, timeout=5, retry=NO_RETRY, failure_policy="raise") as c:
        with pytest.raises(Unavailable, match="cancelled"):
            c.decide(ASKED, CONSENT)
        with pytest.raises(ConsentError):
            c.decide_many([Request(ASKED, CONSENT)])


def test_a_call_this_process_cancelled_stays_cancelled() -> None:
    local = sidecar_error(FakeRpcError(grpc.StatusCode.CANCELLED, LOCALLY_CANCELLED))
    assert isinstance(local, Cancelled)
    remote = sidecar_error(FakeRpcError(grpc.StatusCode.CANCELLED, "CANCELLED"), attempts=2)
    assert isinstance(remote, Unavailable) and remote.attempts == 2
