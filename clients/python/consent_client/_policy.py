"""What the sync and async clients share: their options, and the failure policy that answers for an unreachable sidecar.

Owns the constructor options of both clients (`ClientBase`, validated once into a
`ClientCore`), the per-call deadline and retry bookkeeping (`ClientCore.attempts`), and the
failure policy's answers (`FailurePolicy` says what each one answers). The embedded mode and
consent-core are imported only when a mapping is given or a fallback needs them, so
`import consent_client` stays light. Never opens a channel, never sleeps, never logs payloads.
"""

from __future__ import annotations

import enum
import itertools
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

import grpc
from consent.v1 import decision_pb2_grpc

from consent_client._optional import core_installed, core_required, missing_core
from consent_client._retry import Attempts, RetryHook, RetryPolicy, retry_delay
from consent_client.errors import ConsentError, DeadlineExceeded, InvalidArgument, Unavailable
from consent_client.results import DecideResult, Decision, Reason, Request

if TYPE_CHECKING:
    from consent_core.index import Index
    from consent_core.limits import Limits

    from consent_client.embedded import EmbeddedDecider

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_TARGET",
    "DEFAULT_TIMEOUT",
    "DEFAULT_WINDOW",
    "ClientBase",
    "ClientCore",
    "FailurePolicy",
    "blocked_everywhere",
    "round_robin",
]

DEFAULT_TARGET: Final = "127.0.0.1:50051"
DEFAULT_TIMEOUT: Final = 1.0  # seconds, per call (retries included)
DEFAULT_BATCH_SIZE: Final = 1000  # DecideBatch entries per RPC in decide_many
DEFAULT_WINDOW: Final = 256  # requests in flight on one stream

# Reconnect quickly once the sidecar is back: the channel's own default backoff starts at 1 s
# and grows to 120 s, which would outlast every retry budget of a local sidecar. Not
# grpc.min_reconnect_backoff_ms: gRPC core also uses it as the minimum *connect timeout*
# (default 20 s), and a short one fails connections to a busy sidecar.
_DEFAULT_CHANNEL_OPTIONS: Final[tuple[tuple[str, Any], ...]] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # Explained batches can exceed gRPC's 4 MiB default receive limit; the sidecar bounds them.
    ("grpc.max_receive_message_length", 64 << 20),
)


class FailurePolicy(enum.StrEnum):
    """What answers when the sidecar is unreachable: UNAVAILABLE after the retries (a call the
    sidecar cancelled counts as UNAVAILABLE: `sidecar_error`), or DEADLINE_EXCEEDED (every other
    error is raised).

    - ``fail_closed`` (default): every requested destination that may require consent is
      blocked. Without a local mapping nothing is known about the destinations, so every
      requested one is blocked (reason UNSPECIFIED) and an empty request (= "every known
      destination") answers nothing; the request is still validated as the sidecar would when
      consent-core is installed. With `mappings_path`, the request is decided locally as if
      the event's consent granted nothing: destinations mapped to an enabled category are
      blocked, exempt and unmapped ones (and unknown ones under `unknown_destinations: allow`)
      pass, and the event's `integrations` object still applies.
    - ``fail_open``: every requested destination is allowed (as if the event carried no consent
      object), except those the event's own `integrations` object disables (read by
      consent-core: the `[embedded]` extra).
    - ``embedded``: decided in-process by `EmbeddedDecider` from `mappings_path`, the same
      answer the sidecar would give for that mapping.
    - ``raise``: the error is raised (`Unavailable` or `DeadlineExceeded`).

    Results answered by a policy carry ``degraded=True`` and ``failure`` (the error text).
    """

    FAIL_CLOSED = "fail_closed"
    FAIL_OPEN = "fail_open"
    EMBEDDED = "embedded"
    RAISE = "raise"


def blocked_everywhere(destinations: Sequence[str], explain: bool) -> DecideResult:
    """fail_closed without a mapping: every requested destination blocked (reason UNSPECIFIED)."""
    dests = tuple(destinations)
    decisions = tuple(Decision(d, False, Reason.UNSPECIFIED) for d in dests) if explain else ()
    return DecideResult((), dests, decisions, None)


def round_robin(channels: Sequence[Any]) -> Iterator[decision_pb2_grpc.DecisionServiceStub]:
    """One stub per channel, taken in turn (itertools.cycle: one C call, safe across threads)."""
    return itertools.cycle([decision_pb2_grpc.DecisionServiceStub(c) for c in channels])  # type: ignore[no-untyped-call]


class ClientCore:
    """Validated configuration, retry bookkeeping and the failure policy; no I/O of its own."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float,
        retry: RetryPolicy | None,
        failure_policy: FailurePolicy | str,
        mappings_path: str | os.PathLike[str] | None,
        embedded: EmbeddedDecider | None,
        watch_mappings: bool,
        limits: Limits | None,
        batch_size: int,
        channel_options: Sequence[tuple[str, Any]],
        connections: int,
        on_retry: RetryHook | None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive (seconds)")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if connections < 1:
            raise ValueError("connections must be at least 1")
        self.target = target
        self.timeout = timeout
        self.retry = retry if retry is not None else RetryPolicy()
        self.failure_policy = FailurePolicy(failure_policy)
        if embedded is None and mappings_path is not None:
            with core_required("mappings_path (a local mapping for the failure policy)"):
                from consent_client.embedded import EmbeddedDecider
            embedded = EmbeddedDecider(mappings_path, watch=watch_mappings, limits=limits)
        if self.failure_policy is FailurePolicy.EMBEDDED and embedded is None:
            raise ValueError("failure_policy 'embedded' needs mappings_path (or an EmbeddedDecider)")
        # Refused now rather than at the first outage: without the core, events' integrations cannot be read.
        if self.failure_policy is FailurePolicy.FAIL_OPEN and embedded is None and not core_installed():
            raise missing_core("failure_policy 'fail_open' (it honours events' integrations)")
        self.embedded = embedded
        self._limits = limits  # without a mapping; None: the core's defaults
        self.batch_size = batch_size
        self.on_retry = on_retry
        given = {k for k, _ in channel_options}
        self.channel_options = [o for o in _DEFAULT_CHANNEL_OPTIONS if o[0] not in given] + list(channel_options)
        self.connections = connections
        if connections > 1 and "grpc.use_local_subchannel_pool" not in given:
            # Channels to one target share one connection through gRPC's global subchannel pool.
            self.channel_options.append(("grpc.use_local_subchannel_pool", 1))
        self._empty: tuple[Index, Limits] | None = None  # the no-mapping fallback's, built on first use
        self._validates: bool | None = None  # whether that fallback can validate (consent-core installed)

    def attempts(self, timeout: float | None) -> Attempts:
        """The attempts of one call, under `timeout` seconds (default: the client's)."""
        t = self.timeout if timeout is None else timeout
        if t <= 0:
            raise ValueError("timeout must be positive (seconds)")
        return Attempts(self.retry, self.on_retry, time.monotonic() + t)

    def retry_delay(self, err: ConsentError, attempt: int, deadline: float) -> float | None:
        """Seconds to wait before the next attempt, or None when `err` must be raised now (streams)."""
        return retry_delay(self.retry, self.on_retry, err, attempt, deadline)

    # -- the failure policy --------------------------------------------------------------

    def fallback(self, request: Request, err: ConsentError) -> DecideResult:
        """The failure policy's answer for `request`; re-raises `err` when no policy applies."""
        policy = self.failure_policy
        if policy is FailurePolicy.RAISE or not isinstance(err, Unavailable | DeadlineExceeded):
            raise err
        if self.embedded is not None:
            result = self._with_mapping(self.embedded, request)
        else:
            result = self._without_mapping(request)
        if policy is FailurePolicy.FAIL_OPEN and result.decisions:
            # "No consent object" is the policy's reasoning, not the event's: say so.
            result = replace(result, decisions=tuple(
                replace(d, reason=Reason.UNSPECIFIED) if d.reason is Reason.NO_CONSENT else d
                for d in result.decisions
            ))
        return replace(result, degraded=True, failure=str(err))

    def fallback_entry(self, request: Request, err: ConsentError) -> DecideResult:
        """Like `fallback`, for batch and stream entries: an invalid entry gets `error`, not an exception."""
        try:
            return self.fallback(request, err)
        except InvalidArgument as e:
            return DecideResult(error=e.message)

    def _with_mapping(self, emb: EmbeddedDecider, request: Request) -> DecideResult:
        from consent_client.embedded import Override, decide_local  # loaded with the decider

        snap = emb.snapshot
        if self.failure_policy is FailurePolicy.EMBEDDED:
            return decide_local(snap.index, emb.limits, request, snap.policy)
        override = Override.NO_CONSENT if self.failure_policy is FailurePolicy.FAIL_OPEN else Override.GRANT_NOTHING
        return decide_local(snap.index, emb.limits, request, snap.policy, override=override)

    def _without_mapping(self, request: Request) -> DecideResult:
        if self._validates is None:
            self._validates = core_installed()
        if not self._validates:  # fail_closed (the constructor refused fail_open): nothing to validate with
            return blocked_everywhere(request.destinations, request.explain)
        from consent_client.embedded import Override, decide_local

        index, limits = self._empty_policy()
        # Validate exactly as the sidecar would, then answer without knowing the mapping.
        result = decide_local(index, limits, request, None, override=Override.NO_CONSENT)
        if self.failure_policy is FailurePolicy.FAIL_CLOSED:
            result = blocked_everywhere(request.destinations, request.explain)
        return result

    def _empty_policy(self) -> tuple[Index, Limits]:
        if self._empty is None:
            from consent_core.index import compile as compile_index
            from consent_core.limits import Limits
            from consent_core.model import ConsentMapping

            self._empty = (compile_index(ConsentMapping()), self._limits if self._limits is not None else Limits())
        return self._empty


class ClientBase:
    """The options both clients take (documented on ConsentClient) and what they expose of them."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        failure_policy: FailurePolicy | str = FailurePolicy.FAIL_CLOSED,
        mappings_path: str | os.PathLike[str] | None = None,
        embedded: EmbeddedDecider | None = None,
        watch_mappings: bool = False,
        limits: Limits | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        credentials: grpc.ChannelCredentials | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        connections: int = 1,
        on_retry: RetryHook | None = None,
    ) -> None:
        self._core = ClientCore(
            target, timeout=timeout, retry=retry, failure_policy=failure_policy, mappings_path=mappings_path,
            embedded=embedded, watch_mappings=watch_mappings, limits=limits, batch_size=batch_size,
            channel_options=channel_options, connections=connections, on_retry=on_retry,
        )
        if credentials is not None and target.startswith("unix:"):
            raise ValueError("credentials make no sense on a unix socket target")
        self._open_channel(credentials)

    def _open_channel(self, credentials: grpc.ChannelCredentials | None) -> None:
        raise NotImplementedError

    @property
    def target(self) -> str:
        return self._core.target

    @property
    def failure_policy(self) -> FailurePolicy:
        return self._core.failure_policy

    @property
    def embedded(self) -> EmbeddedDecider | None:
        """The local decider built from `mappings_path` (None without one)."""
        return self._core.embedded
