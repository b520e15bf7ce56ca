"""AsyncConsentClient and AsyncDecisionStream (consent_client.aio) against a real sidecar.

The async client answers like the sync one; the shared stream pipelines concurrent callers,
matches answers by order, survives cancelled callers and reopens after a restart.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from consent_client import (
    AsyncConsentClient,
    ClientClosedError,
    ConsentClient,
    DecideResult,
    InvalidArgument,
    RetryPolicy,
)

from .support import WAIT, free_port, serving_here, workload


async def test_async_client_decides_like_the_sync_one(target: str, client: ConsentClient) -> None:
    reqs = workload(40)
    expected = client.decide_many(reqs)
    async with AsyncConsentClient(target, timeout=5.0, failure_policy="raise", batch_size=7) as ac:
        one = await ac.decide(["amplitude", "google-ads"], {"C0002": True})
        ev = await ac.decide_event({"type": "track", "integrations": {"google-ads": False}}, ["google-ads"])
        many = await ac.decide_many(reqs)
        with pytest.raises(InvalidArgument):
            await ac.decide([""])
    assert (one.allowed, one.blocked) == (("amplitude",), ("google-ads",))
    assert ev.blocked == ("google-ads",)
    assert [(r.allowed, r.blocked, r.decisions) for r in many] == [
        (r.allowed, r.blocked, r.decisions) for r in expected
    ]


async def test_async_stream_pipelines_concurrent_calls_and_matches_by_order(
    target: str, client: ConsentClient
) -> None:
    reqs = workload(400)
    expected = client.decide_many(reqs)
    async with AsyncConsentClient(target, timeout=5.0, failure_policy="raise") as ac, ac.stream(window=16) as s:
        got = await asyncio.gather(*(s.decide_request(r) for r in reqs))
        bad = await s.decide([""])
        assert len(s._pending) == 0
    assert [(r.allowed, r.blocked, r.decisions) for r in got] == [
        (r.allowed, r.blocked, r.decisions) for r in expected
    ]
    assert bad.error is not None and "destinations[0]" in bad.error


async def test_async_stream_reopens_after_a_restart(mapping_file: Path) -> None:
    target = f"127.0.0.1:{free_port()}"
    retry = RetryPolicy(max_attempts=100, initial_backoff=0.02, max_backoff=0.1)
    async with AsyncConsentClient(target, timeout=WAIT, retry=retry) as ac:
        async with serving_here(mapping_file, [target]):
            s = ac.stream(window=8)
            assert not (await s.decide(["amplitude"], {"C0002": True})).degraded
        # Stopped: the stream cannot be reopened within the retry budget of a short deadline.
        down = await s.decide(["amplitude"], {"C0002": True}, timeout=0.5)
        assert down.degraded and down.blocked == ("amplitude",)
        async with serving_here(mapping_file, [target]):
            up = await s.decide(["amplitude"], {"C0002": True})
            assert not up.degraded and up.allowed == ("amplitude",)
            await s.close()
        with pytest.raises(ClientClosedError):
            await s.decide(["amplitude"])


async def test_a_cancelled_caller_does_not_break_the_shared_stream(target: str, client: ConsentClient) -> None:
    reqs = workload(60)
    expected = client.decide_many(reqs)
    async with AsyncConsentClient(target, timeout=WAIT, failure_policy="raise") as ac, ac.stream(window=8) as s:
        tasks = [asyncio.create_task(s.decide_request(r)) for r in reqs]
        await asyncio.sleep(0)  # let them start: some are queued, some waiting for the window
        for t in tasks[::7]:
            t.cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
    for i, (got, want) in enumerate(zip(done, expected, strict=True)):
        if i % 7 == 0:
            assert isinstance(got, asyncio.CancelledError)
        else:  # every other caller gets its own answer: order matching survived the cancellations
            assert isinstance(got, DecideResult) and not got.degraded
            assert (got.allowed, got.blocked, got.decisions) == (want.allowed, want.blocked, want.decisions)
