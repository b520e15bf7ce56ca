"""Retries of UNAVAILABLE: the backoff schedule and one call's attempts under its deadline.

Shared by the sync and async clients: `Attempts` holds every step of a retry loop (count the
attempt, give it the time left, translate its gRPC error, choose the backoff or raise), so
each client's loop differs only in `time.sleep` vs `await asyncio.sleep`. `sidecar_error` is
the translation of every error a call gets on the wire: a CANCELLED the sidecar sent (a
server shutting down cancels what it cannot finish) is a sidecar failure like UNAVAILABLE,
which the failure policy answers, not the caller's own cancellation. Never sleeps, never
does I/O, never retries anything but UNAVAILABLE.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeAlias

import grpc

from consent_client.errors import Cancelled, ConsentError, DeadlineExceeded, Unavailable, from_rpc_error

__all__ = ["LOCALLY_CANCELLED", "Attempts", "RetryHook", "RetryPolicy", "retry_delay", "sidecar_error"]

LOCALLY_CANCELLED: Final = "Locally cancelled by application!"  # gRPC's details when this process cancelled a call

RetryHook: TypeAlias = Callable[[int, ConsentError, float], None]
"""Called before each retry with (attempt that failed, its error, seconds until the next one)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries of UNAVAILABLE: exponential backoff with ±`jitter` randomisation.

    max_attempts counts the first try (1 = never retry). Backoffs in seconds: the n-th retry
    waits min(max_backoff, initial_backoff * multiplier**(n-1)) * uniform(1-jitter, 1+jitter).
    A retry that would not start before the call's deadline is not made.
    """

    max_attempts: int = 4
    initial_backoff: float = 0.05
    max_backoff: float = 1.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("backoffs must be >= 0 and multiplier >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be within [0, 1]")

    def delay(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        return max(0.0, base * (1.0 + self.jitter * (2.0 * rand() - 1.0)))


def sidecar_error(error: grpc.RpcError, *, attempts: int = 1) -> ConsentError:
    """A call's gRPC error as the client's: `from_rpc_error`, but a CANCELLED from the sidecar is `Unavailable`.

    The sidecar cancels a call only when it cannot finish it (shutting down past its grace
    period, or a proxy resetting the stream): the caller did nothing wrong, and the call may be
    retried (decisions are reads) and answered by the failure policy. A call cancelled by this
    process stays `Cancelled`.
    """
    err = from_rpc_error(error, attempts=attempts)
    if isinstance(err, Cancelled) and err.message != LOCALLY_CANCELLED:
        unavailable = Unavailable(
            f"the sidecar cancelled the call ({err.message}): it is shutting down or restarting", attempts=attempts
        )
        unavailable.__cause__ = error
        return unavailable
    return err


def retry_delay(
    policy: RetryPolicy, on_retry: RetryHook | None, err: ConsentError, attempt: int, deadline: float
) -> float | None:
    """Seconds to wait before attempt `attempt + 1`, or None when `err` must be raised now.

    Only UNAVAILABLE is retried, at most `policy.max_attempts` times in all, and never when the
    backoff would end at or after `deadline` (a time.monotonic() value). Calls `on_retry` first.
    """
    if not isinstance(err, Unavailable) or attempt >= policy.max_attempts:
        return None
    delay = policy.delay(attempt)
    if time.monotonic() + delay >= deadline:
        return None
    if on_retry is not None:
        on_retry(attempt, err, delay)
    return delay


class Attempts:
    """One unary call's attempts under one deadline, driven by a client's retry loop:

        attempts = core.attempts(timeout)
        while True:
            remaining = attempts.start()        # raises DeadlineExceeded when no time is left
            try:
                return call(msg, timeout=remaining)
            except grpc.RpcError as e:
                err = attempts.failed(e)
            sleep(attempts.backoff(err))        # raises err when it is not retried
    """

    __slots__ = ("_on_retry", "_policy", "attempt", "deadline")

    def __init__(self, policy: RetryPolicy, on_retry: RetryHook | None, deadline: float) -> None:
        self._policy = policy
        self._on_retry = on_retry
        self.deadline = deadline  # time.monotonic() seconds
        self.attempt = 0  # attempts started so far

    def start(self) -> float:
        """Counts a new attempt and returns the seconds it may take; raises DeadlineExceeded when none are left."""
        self.attempt += 1
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:  # gRPC reads a zero timeout as "no deadline"
            raise DeadlineExceeded("the deadline passed before the call was made", attempts=self.attempt)
        return remaining

    def failed(self, error: grpc.RpcError) -> ConsentError:
        """The current attempt's gRPC error, as the client's error (counting the attempts made)."""
        return sidecar_error(error, attempts=self.attempt)

    def backoff(self, err: ConsentError) -> float:
        """Seconds to wait before the next attempt; raises `err` when there is none to make."""
        delay = retry_delay(self._policy, self._on_retry, err, self.attempt, self.deadline)
        if delay is None:
            raise err
        return delay
