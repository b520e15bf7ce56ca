"""consent_client._retry: bounded retries of UNAVAILABLE under the call's deadline.

The steps of one call's attempts (`Attempts`) on their own, then through both clients: a
sidecar started late is waited for; retries stop at max_attempts and at the deadline.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from consent_client import AsyncConsentClient, ConsentClient, ConsentError, DeadlineExceeded, RetryPolicy, Unavailable
from consent_client._retry import Attempts

from .support import WAIT, FakeRpcError, ServerThread, free_port, serving_here


def test_backoff_grows_exponentially_is_capped_and_jittered() -> None:
    policy = RetryPolicy(max_attempts=10, initial_backoff=0.1, max_backoff=1.0, multiplier=2.0, jitter=0.2)
    assert [policy.delay(n, lambda: 0.5) for n in (1, 2, 3, 4, 5, 6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert policy.delay(1, lambda: 0.0) == pytest.approx(0.08)
    assert policy.delay(1, lambda: 1.0) == pytest.approx(0.12)
    assert policy.delay(9, lambda: 1.0) == pytest.approx(1.2)


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": 0}, {"initial_backoff": -1}, {"multiplier": 0.5}, {"jitter": 1.5}]
)
def test_retry_policy_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_an_attempt_gets_the_time_left_and_none_starts_after_the_deadline() -> None:
    assert 0 < Attempts(RetryPolicy(), None, time.monotonic() + 5.0).start() <= 5.0
    late = Attempts(RetryPolicy(), None, time.monotonic() - 0.001)
    with pytest.raises(DeadlineExceeded, match="before the call was made") as info:
        late.start()
    assert info.value.attempts == 1


def test_unavailable_is_retried_with_backoff_until_max_attempts() -> None:
    hooked: list[tuple[int, str, float]] = []
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02, jitter=0.0)
    attempts = Attempts(policy, lambda a, e, d: hooked.append((a, str(e), d)), time.monotonic() + WAIT)
    delays = []
    for _ in range(2):
        attempts.start()
        delays.append(attempts.backoff(attempts.failed(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "down"))))
    attempts.start()
    last = attempts.failed(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "still down"))
    with pytest.raises(Unavailable) as info:
        attempts.backoff(last)
    assert info.value is last and last.attempts == 3
    assert delays == pytest.approx([0.01, 0.02])
    assert hooked == [(1, "UNAVAILABLE: down", pytest.approx(0.01)), (2, "UNAVAILABLE: down", pytest.approx(0.02))]


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
     grpc.StatusCode.INTERNAL],
)
def test_every_other_error_is_raised_at_once(code: grpc.StatusCode) -> None:
    hooked: list[int] = []
    attempts = Attempts(RetryPolicy(max_attempts=10), lambda a, e, d: hooked.append(a), time.monotonic() + WAIT)
    attempts.start()
    err = attempts.failed(FakeRpcError(code, "no"))
    assert err.code is code and err.attempts == 1
    with pytest.raises(ConsentError) as info:
        attempts.backoff(err)
    assert info.value is err
    assert hooked == []


def test_a_retry_whose_backoff_would_outlast_the_deadline_is_not_made() -> None:
    hooked: list[int] = []
    policy = RetryPolicy(max_attempts=10, initial_backoff=5.0, max_backoff=5.0, jitter=0.0)
    attempts = Attempts(policy, lambda a, e, d: hooked.append(a), time.monotonic() + 1.0)
    attempts.start()
    with pytest.raises(Unavailable):
        attempts.backoff(attempts.failed(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "down")))
    assert hooked == []


def test_unavailable_is_retried_until_a_late_sidecar_answers(mapping_file: Path) -> None:
    target = f"127.0.0.1:{free_port()}"
    first_failure = threading.Event()
    retries: list[tuple[int, str]] = []

    def on_retry(attempt: int, err: ConsentError, delay: float) -> None:
        retries.append((attempt, type(err).__name__))
        first_failure.set()

    retry = RetryPolicy(max_attempts=200, initial_backoff=0.02, max_backoff=0.1)
    with (
        ConsentClient(target, timeout=WAIT, retry=retry, on_retry=on_retry, failure_policy="raise") as c,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        pending = pool.submit(c.decide, ["google-ads"], {"C0004": False})
        assert first_failure.wait(WAIT), "the client never saw the sidecar missing"
        with ServerThread(mapping_file, [target]):
            result = pending.result(timeout=WAIT)
    assert result.blocked == ("google-ads",)
    assert not result.degraded
    assert retries and all(name == "Unavailable" for _, name in retries)


def test_retries_are_bounded_and_counted() -> None:
    calls: list[int] = []
    retry = RetryPolicy(max_attempts=3, initial_backoff=0.001, max_backoff=0.002)
    with ConsentClient(
        f"127.0.0.1:{free_port()}", timeout=WAIT, retry=retry, failure_policy="raise",
        on_retry=lambda attempt, err, delay: calls.append(attempt),
    ) as c, pytest.raises(Unavailable) as info:
        c.decide(["amplitude"], {})
    assert info.value.attempts == 3
    assert calls == [1, 2]


def test_retries_stop_at_the_deadline() -> None:
    retry = RetryPolicy(max_attempts=10_000, initial_backoff=0.05, max_backoff=0.05)
    # The last attempt may itself run out of time while gRPC is still connecting: then the
    # truthful error is DEADLINE_EXCEEDED rather than the UNAVAILABLE of the attempts before.
    with (
        ConsentClient(f"127.0.0.1:{free_port()}", timeout=1.0, retry=retry, failure_policy="raise") as c,
        pytest.raises((Unavailable, DeadlineExceeded)) as info,
    ):
        c.decide(["amplitude"], {})
    assert 1 < info.value.attempts < 10_000


async def test_async_retries_until_a_late_sidecar_answers(mapping_file: Path) -> None:
    target = f"127.0.0.1:{free_port()}"
    failed = asyncio.Event()
    retry = RetryPolicy(max_attempts=200, initial_backoff=0.02, max_backoff=0.1)
    async with AsyncConsentClient(
        target, timeout=WAIT, retry=retry, failure_policy="raise", on_retry=lambda *_: failed.set()
    ) as ac:
        pending = asyncio.create_task(ac.decide(["amplitude"], {"C0002": True}))
        await asyncio.wait_for(failed.wait(), WAIT)
        async with serving_here(mapping_file, [target]):
            result = await asyncio.wait_for(pending, WAIT)
    assert result.allowed == ("amplitude",) and not result.degraded
