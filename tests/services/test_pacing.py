"""The catch-up pacer: a token bucket shared by every WatchAuditEvents stream, waiters woken in order."""

from __future__ import annotations

import asyncio
import time

import pytest

from consent_sidecar.services.pacing import Pacer

WAIT = 5.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def until(condition: object, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


async def test_a_catch_up_within_the_burst_is_never_paced() -> None:
    pacer = Pacer(rate=10.0, burst=50, clock=Clock())
    for _ in range(50):
        await asyncio.wait_for(pacer.take(), 0.5)  # no token refills on this clock: all from the burst
    assert pacer.waiting == 0


async def test_beyond_the_burst_waiters_get_one_token_each_in_the_order_they_asked() -> None:
    clock = Clock()
    pacer = Pacer(rate=100.0, burst=2, clock=clock)
    await pacer.take()
    await pacer.take()
    tasks = [asyncio.create_task(pacer.take(), name=str(i)) for i in range(4)]
    await until(lambda: pacer.waiting == 4, "four waiters")
    clock.now += 0.02  # two tokens
    await until(lambda: sum(t.done() for t in tasks) == 2, "two woken")
    assert [t.done() for t in tasks] == [True, True, False, False]
    for _ in range(20):  # the timer keeps ticking; nothing more without tokens
        await asyncio.sleep(0.006)
    assert [t.done() for t in tasks] == [True, True, False, False]
    clock.now += 0.02
    await asyncio.wait_for(asyncio.gather(*tasks), WAIT)


async def test_a_cancelled_waiter_gives_its_place_to_the_next() -> None:
    clock = Clock()
    pacer = Pacer(rate=100.0, burst=1, clock=clock)
    await pacer.take()
    first, second = asyncio.create_task(pacer.take()), asyncio.create_task(pacer.take())
    await until(lambda: pacer.waiting == 2, "two waiters")
    first.cancel()  # its stream ended while it waited
    clock.now += 0.01  # one token
    await asyncio.wait_for(second, WAIT)
    assert pacer.waiting == 0


async def test_tokens_saved_up_never_exceed_the_burst() -> None:
    clock = Clock()
    pacer = Pacer(rate=1000.0, burst=3, clock=clock)
    clock.now += 60.0  # a minute idle
    for _ in range(3):
        await pacer.take()
    waiter = asyncio.create_task(pacer.take())
    await until(lambda: pacer.waiting == 1, "the fourth waits")
    clock.now += 0.0011  # one token (and a little: 60.001 - 60 is not quite 0.001 in floating point)
    await asyncio.wait_for(waiter, WAIT)


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_a_pacer_needs_a_positive_rate_and_a_burst(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="rate must be positive"):
        Pacer(rate=rate, burst=burst)
