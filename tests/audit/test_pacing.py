"""The history replay budget: a first-come-first-served token bucket, against an injected clock (no sleeping)."""

from __future__ import annotations

import asyncio

import pytest

from consent_sidecar.audit.pacing import ReplayPacer, TokenBucket


class FakeTime:
    """A clock that moves only when the code under test sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_full_bucket_lets_a_burst_through_at_once() -> None:
    bucket = TokenBucket(rate=100, burst=100, now=0.0)
    assert [bucket.reserve(25, 0.0) for _ in range(4)] == [0.0, 0.0, 0.0, 0.0]
    assert bucket.reserve(1, 0.0) == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("rate", "burst", "sizes", "waits"),
    [
        (100, 100, [100, 100, 100], [0.0, 1.0, 2.0]),  # each page waits for the pages reserved before it
        (100, 100, [100, 50, 10], [0.0, 0.5, 0.6]),
        (1000, 100, [100, 100, 100, 100], [0.0, 0.1, 0.2, 0.3]),
        (10, 100, [150], [5.0]),  # a page larger than the bucket waits for its excess
    ],
)
def test_reservations_wait_in_the_order_they_were_made(
    rate: float, burst: float, sizes: list[int], waits: list[float]
) -> None:
    bucket = TokenBucket(rate=rate, burst=burst, now=0.0)
    assert [bucket.reserve(n, 0.0) for n in sizes] == pytest.approx(waits)


def test_tokens_are_earned_at_the_rate_and_never_beyond_the_burst() -> None:
    bucket = TokenBucket(rate=100, burst=100, now=0.0)
    assert bucket.reserve(100, 0.0) == 0.0
    assert bucket.tokens(0.5) == pytest.approx(50)
    assert bucket.tokens(60.0) == pytest.approx(100)  # an idle minute does not bank 6,000 events
    assert bucket.reserve(150, 60.0) == pytest.approx(0.5)


def test_a_clock_stepping_back_earns_nothing() -> None:
    bucket = TokenBucket(rate=100, burst=100, now=10.0)
    bucket.reserve(100, 10.0)
    assert bucket.tokens(5.0) == 0
    assert bucket.tokens(10.5) == pytest.approx(50)


def test_a_refund_shortens_the_next_wait_up_to_a_full_bucket() -> None:
    bucket = TokenBucket(rate=100, burst=100, now=0.0)
    bucket.reserve(100, 0.0)
    bucket.reserve(100, 0.0)  # queued one second
    bucket.refund(60, 0.0)  # the page held 40 events
    assert bucket.reserve(10, 0.0) == pytest.approx(0.5)
    bucket.refund(10_000, 0.0)
    assert bucket.tokens(0.0) == 100


def test_the_rate_holds_over_any_run_of_reservations() -> None:
    # Whatever the page sizes, by time t no more than burst + rate * t events were let through.
    bucket = TokenBucket(rate=500, burst=100, now=0.0)
    released: list[tuple[float, int]] = []
    for i in range(2000):
        n = 1 + (i * 37) % 100
        released.append((bucket.reserve(n, 0.0), n))
    total = 0
    for at, n in sorted(released):
        total += n
        assert total <= 100 + 500 * at + 1e-6


@pytest.mark.parametrize(("rate", "burst"), [(0, 100), (-1, 100), (100, 0)])
def test_a_bucket_needs_a_positive_rate_and_room_for_one(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=rate, burst=burst, now=0.0)


async def test_the_pacer_sleeps_each_caller_until_its_turn() -> None:
    t = FakeTime()
    pacer = ReplayPacer(200, burst=100, clock=t.clock, sleep=t.sleep)
    await pacer.acquire(100)  # the burst: no sleep
    await pacer.acquire(100)
    await pacer.acquire(0)  # nothing to replay: never asks
    assert t.slept == pytest.approx([0.5])
    pacer.refund(50)
    await pacer.acquire(100)
    assert t.slept == pytest.approx([0.5, 0.25])


async def test_a_caller_leaving_before_its_turn_gives_its_reservation_back() -> None:
    t = FakeTime()
    blocked = asyncio.Event()

    async def never(seconds: float) -> None:
        blocked.set()
        await asyncio.Event().wait()

    pacer = ReplayPacer(100, burst=100, clock=t.clock, sleep=never)
    await pacer.acquire(100)
    waiter = asyncio.ensure_future(pacer.acquire(100))
    await asyncio.wait_for(blocked.wait(), 5)
    assert pacer.bucket.tokens(t.now) == pytest.approx(-100)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert pacer.bucket.tokens(t.now) == pytest.approx(0)
