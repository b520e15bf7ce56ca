"""`ConsentClient` (sync) and `AsyncConsentClient`: the sidecar's DecisionService, made safe to depend on.

Owns, for both flavours: one channel per client (reused by every call, closed by `close()` or
the context manager), a deadline on every call, bounded retries of UNAVAILABLE with
exponential backoff and jitter, translation of every gRPC error into `consent_client.errors`
at the stub boundary, and the failure policy that answers when the sidecar stays
unreachable. `stream()` keeps one DecideStream open and pipelines requests through a bounded
in-flight window, matching responses to requests by order (the RPC answers in order).

Failure policy (applies only when the sidecar is unreachable: UNAVAILABLE after the retries,
or DEADLINE_EXCEEDED; every other error is raised):

- ``fail_closed`` (default): every requested destination that may require consent is
  blocked. Without a local mapping nothing is known about the destinations, so every
  requested one is blocked (reason UNSPECIFIED) and an empty request (= "every known
  destination") answers nothing. With `mappings_path`, the request is decided locally as if
  the event's consent granted nothing: destinations mapped to an enabled category are
  blocked, exempt and unmapped ones (and unknown ones under `unknown_destinations: allow`)
  pass, and the event's `integrations` object still applies.
- ``fail_open``: every requested destination is allowed (as if the event carried no consent
  object), except those the event's own `integrations` object disables.
- ``embedded``: decided in-process by `EmbeddedDecider` from `mappings_path`, the same
  answer the sidecar would give for that mapping.
- ``raise``: the error is raised (`Unavailable` or `DeadlineExceeded`).

Results answered by a policy carry ``degraded=True`` and ``failure`` (the error text).
The client never logs payloads and never retries anything but UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import os
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Final, TypeAlias

import grpc
import grpc.aio
from consent.v1 import decision_pb2, decision_pb2_grpc
from consent_core.index import Index
from consent_core.index import compile as compile_index
from consent_core.limits import Limits
from consent_core.model import ConsentMapping

from consent_client.embedded import EmbeddedDecider, Override, blocked_everywhere, decide_local, encode_event
from consent_client.errors import (
    ClientClosedError,
    ConsentError,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    Unavailable,
    from_rpc_error,
)
from consent_client.results import DecideResult, PolicyVersion, Reason, Request, as_destinations, consent_problem

__all__ = [
    "DEFAULT_TARGET",
    "DEFAULT_TIMEOUT",
    "AsyncConsentClient",
    "AsyncDecisionStream",
    "ConsentClient",
    "FailurePolicy",
    "RequestLike",
    "RetryPolicy",
]

DEFAULT_TARGET: Final = "127.0.0.1:50051"
DEFAULT_TIMEOUT: Final = 1.0  # seconds, per call (retries included)
DEFAULT_BATCH_SIZE: Final = 1000  # DecideBatch entries per RPC in decide_many
DEFAULT_WINDOW: Final = 256  # requests in flight on one stream

RequestLike: TypeAlias = Request | Mapping[str, Any] | decision_pb2.DecideRequest
"""A `Request`, a Segment event dict (decided for every known destination), or a raw DecideRequest."""

RetryHook: TypeAlias = Callable[[int, ConsentError, float], None]
"""Called before each retry with (attempt that failed, its error, seconds until the next one)."""

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
    """What answers when the sidecar is unreachable (see the module docstring)."""

    FAIL_CLOSED = "fail_closed"
    FAIL_OPEN = "fail_open"
    EMBEDDED = "embedded"
    RAISE = "raise"


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


# -- requests ----------------------------------------------------------------------------------


def _as_request(item: RequestLike) -> Request:
    if isinstance(item, Request):
        return item
    if isinstance(item, decision_pb2.DecideRequest):
        source = item.WhichOneof("source")
        return Request(
            tuple(item.destinations),
            dict(item.consent.category_preferences) if source == "consent" else None,
            item.segment_event if source == "segment_event" else None,
            item.explain,
        )
    if isinstance(item, Mapping):
        return Request(event=item)
    raise TypeError(f"expected a Request, a Segment event dict or a DecideRequest, got {type(item).__name__}")


def _to_proto(request: Request) -> decision_pb2.DecideRequest:
    """The wire form; raises InvalidArgument for what cannot even be encoded."""
    if request.consent is not None:
        # Strict booleans: protobuf would turn 1 into true, the embedded decider would not grant it.
        if (problem := consent_problem(request.consent)) is not None:
            raise InvalidArgument(problem)
        consent = decision_pb2.Consent(category_preferences=request.consent)  # set even when empty
        return decision_pb2.DecideRequest(
            consent=consent, destinations=request.destinations, explain=request.explain
        )
    if request.event is not None:
        return decision_pb2.DecideRequest(
            segment_event=encode_event(request.event), destinations=request.destinations, explain=request.explain
        )
    return decision_pb2.DecideRequest(destinations=request.destinations, explain=request.explain)


def _policy_of(msg: decision_pb2.DecideBatchResponse) -> PolicyVersion | None:
    if not msg.HasField("policy"):
        return None
    return PolicyVersion(msg.policy.generation, msg.policy.digest)


# -- what both flavours share --------------------------------------------------------------------


class _Core:
    """Configuration, retry decisions and the failure policy; no I/O of its own."""

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
            embedded = EmbeddedDecider(mappings_path, watch=watch_mappings, limits=limits)
        if self.failure_policy is FailurePolicy.EMBEDDED and embedded is None:
            raise ValueError("failure_policy 'embedded' needs mappings_path (or an EmbeddedDecider)")
        self.embedded = embedded
        self.limits = embedded.limits if embedded is not None else (limits if limits is not None else Limits())
        self.batch_size = batch_size
        self.on_retry = on_retry
        given = {k for k, _ in channel_options}
        self.channel_options = [o for o in _DEFAULT_CHANNEL_OPTIONS if o[0] not in given] + list(channel_options)
        self.connections = connections
        if connections > 1 and "grpc.use_local_subchannel_pool" not in given:
            # Channels to one target share one connection through gRPC's global subchannel pool.
            self.channel_options.append(("grpc.use_local_subchannel_pool", 1))
        self._empty_index: Index | None = None

    def deadline_of(self, timeout: float | None) -> float:
        t = self.timeout if timeout is None else timeout
        if t <= 0:
            raise ValueError("timeout must be positive (seconds)")
        return time.monotonic() + t

    def retry_delay(self, err: ConsentError, attempt: int, deadline: float) -> float | None:
        """Seconds to wait before the next attempt, or None when `err` must be raised now."""
        if not isinstance(err, Unavailable) or attempt >= self.retry.max_attempts:
            return None
        delay = self.retry.delay(attempt)
        if time.monotonic() + delay >= deadline:
            return None
        if self.on_retry is not None:
            self.on_retry(attempt, err, delay)
        return delay

    # -- the failure policy --------------------------------------------------------------

    def fallback(self, request: Request, err: ConsentError) -> DecideResult:
        """The failure policy's answer for `request`; re-raises `err` when no policy applies."""
        policy = self.failure_policy
        if policy is FailurePolicy.RAISE or not isinstance(err, Unavailable | DeadlineExceeded):
            raise err
        emb = self.embedded
        if policy is FailurePolicy.EMBEDDED:
            assert emb is not None
            snap = emb.snapshot
            result = decide_local(snap.index, self.limits, request, snap.policy)
        elif emb is not None:
            snap = emb.snapshot
            override = Override.NO_CONSENT if policy is FailurePolicy.FAIL_OPEN else Override.GRANT_NOTHING
            result = decide_local(snap.index, self.limits, request, snap.policy, override=override)
        else:
            # Validate exactly as the sidecar would, then answer without knowing the mapping.
            result = decide_local(self._empty(), self.limits, request, None, override=Override.NO_CONSENT)
            if policy is FailurePolicy.FAIL_CLOSED:
                result = blocked_everywhere(request.destinations, request.explain)
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

    def _empty(self) -> Index:
        if self._empty_index is None:
            self._empty_index = compile_index(ConsentMapping())
        return self._empty_index


def _chunks(items: list[Request], size: int) -> Iterator[list[Request]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _prepare(chunk: list[Request]) -> tuple[list[decision_pb2.DecideRequest], dict[int, DecideResult]]:
    """Wire messages for the entries that encode, and error results (by position) for the rest."""
    msgs: list[decision_pb2.DecideRequest] = []
    local: dict[int, DecideResult] = {}
    for i, req in enumerate(chunk):
        try:
            msgs.append(_to_proto(req))
        except InvalidArgument as e:
            local[i] = DecideResult(error=e.message)
    return msgs, local


def _merge(
    chunk: list[Request],
    local: dict[int, DecideResult],
    response: decision_pb2.DecideBatchResponse,
) -> list[DecideResult]:
    expected = len(chunk) - len(local)
    if len(response.responses) != expected:
        raise Internal(f"DecideBatch answered {len(response.responses)} entries for {expected} requests")
    policy = _policy_of(response)
    answers = iter(response.responses)
    return [local[i] if i in local else DecideResult.from_proto(next(answers), policy) for i in range(len(chunk))]


def _check_credentials(core: _Core, credentials: grpc.ChannelCredentials | None) -> None:
    if credentials is not None and core.target.startswith("unix:"):
        raise ValueError("credentials make no sense on a unix socket target")


# -- the sync client ------------------------------------------------------------------------


class _ClientBase:
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
        self._core = _Core(
            target, timeout=timeout, retry=retry, failure_policy=failure_policy, mappings_path=mappings_path,
            embedded=embedded, watch_mappings=watch_mappings, limits=limits, batch_size=batch_size,
            channel_options=channel_options, connections=connections, on_retry=on_retry,
        )
        _check_credentials(self._core, credentials)
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


class ConsentClient(_ClientBase):
    """Blocking client of the sidecar's DecisionService. Thread-safe; its channels are reused.

    target: "host:port" or "unix:/path/to.sock" (also "unix:///abs/path").
    timeout: default deadline of every call in seconds, retries included; each call can
        override it with `timeout=`. On `stream()` it bounds the wait for each response.
    retry: retries of UNAVAILABLE (see RetryPolicy); `RetryPolicy(max_attempts=1)` disables them.
    failure_policy: "fail_closed" (default), "fail_open", "embedded" or "raise" (module docstring).
    mappings_path: the mapping file, for failure_policy "embedded" and to let fail_closed /
        fail_open know the mapping; `watch_mappings` re-reads it when it changes.
    batch_size: DecideBatch entries per RPC in `decide_many` (each chunk gets the deadline).
    credentials: TLS channel credentials for a remote sidecar; None = plaintext.
    channel_options: extra gRPC channel arguments (override the defaults of the same name).
    connections: connections to open (default 1); calls and streams take turns across them.
        `serve --workers N` hands each connection to one worker: open N or more to use them all.
    on_retry: called before each retry with (attempt, error, delay); for logs and metrics.
    """

    def _open_channel(self, credentials: grpc.ChannelCredentials | None) -> None:
        opts = self._core.channel_options
        target = self._core.target
        self._channels = [
            grpc.secure_channel(target, credentials, options=opts)
            if credentials is not None
            else grpc.insecure_channel(target, options=opts)
            for _ in range(self._core.connections)
        ]
        self._stubs = itertools.cycle(
            [decision_pb2_grpc.DecisionServiceStub(c) for c in self._channels]  # type: ignore[no-untyped-call]
        )
        self._closed = False

    @property
    def _stub(self) -> decision_pb2_grpc.DecisionServiceStub:
        """The next connection's stub (itertools.cycle: one C call, safe across threads)."""
        return next(self._stubs)

    def close(self) -> None:
        """Closes the channels; calls made afterwards raise ClientClosedError. Idempotent."""
        if not self._closed:
            self._closed = True
            for channel in self._channels:
                channel.close()

    def __enter__(self) -> ConsentClient:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- unary -----------------------------------------------------------------------------

    def _unary(self, method: Callable[..., Any], msg: Any, timeout: float | None) -> Any:
        if self._closed:
            raise ClientClosedError("the client is closed")
        core = self._core
        deadline = core.deadline_of(timeout)
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:  # gRPC reads a zero timeout as "no deadline"
                raise DeadlineExceeded("the deadline passed before the call was made", attempts=attempt)
            try:
                return method(msg, timeout=remaining)
            except grpc.RpcError as e:
                err = from_rpc_error(e, attempts=attempt)
            except ValueError as e:  # grpc: "Cannot invoke RPC on closed channel!"
                raise ClientClosedError(str(e)) from None
            delay = core.retry_delay(err, attempt, deadline)
            if delay is None:
                raise err
            time.sleep(delay)  # backoff between attempts, bounded by the deadline

    def decide(
        self,
        destinations: Sequence[str] = (),
        consent: Mapping[str, bool] | None = None,
        *,
        explain: bool = False,
        timeout: float | None = None,
    ) -> DecideResult:
        """Decides one event given its consent object's `categoryPreferences` (None = no consent object).

        destinations: ids (or `<id>/<instance>`); empty = every destination the mapping knows.
        Raises InvalidArgument for malformed input, other ConsentErrors unless the failure
        policy answers (then the result is `degraded`).
        """
        req = Request(as_destinations(destinations), consent, None, explain)
        return self.decide_request(req, timeout=timeout)

    def decide_event(
        self,
        event: Mapping[str, Any] | bytes | str,
        destinations: Sequence[str] = (),
        *,
        explain: bool = False,
        timeout: float | None = None,
    ) -> DecideResult:
        """Decides a Segment event (dict or raw JSON): consent from context.consent, `integrations` honoured."""
        req = Request(as_destinations(destinations), None, event, explain)
        return self.decide_request(req, timeout=timeout)

    def decide_request(self, request: RequestLike, *, timeout: float | None = None) -> DecideResult:
        """Decides one `Request` (or event dict, or DecideRequest) with the Decide RPC."""
        req = _as_request(request)
        msg = _to_proto(req)
        try:
            response = self._unary(self._stub.Decide, msg, timeout)
        except ConsentError as err:
            return self._core.fallback(req, err)
        return DecideResult.from_proto(response)

    def decide_many(self, requests: Iterable[RequestLike], *, timeout: float | None = None) -> list[DecideResult]:
        """Decides many events with DecideBatch, `batch_size` entries per RPC; results in request order.

        An invalid entry gets a result with `error` (the others are decided); each RPC gets
        its own deadline; when a chunk cannot reach the sidecar, the failure policy answers
        each of its entries.
        """
        reqs = [_as_request(r) for r in requests]
        out: list[DecideResult] = []
        for chunk in _chunks(reqs, self._core.batch_size):
            msgs, local = _prepare(chunk)
            if not msgs:  # nothing the sidecar could decide
                out.extend(local[i] for i in range(len(chunk)))
                continue
            try:
                response = self._unary(self._stub.DecideBatch, decision_pb2.DecideBatchRequest(requests=msgs), timeout)
            except (Unavailable, DeadlineExceeded) as err:
                out.extend(local[i] if i in local else self._core.fallback_entry(r, err) for i, r in enumerate(chunk))
                continue
            out.extend(_merge(chunk, local, response))
        return out

    def stream(
        self,
        requests: Iterable[RequestLike],
        *,
        window: int = DEFAULT_WINDOW,
        timeout: float | None = None,
    ) -> _SyncStream:
        """A context manager yielding one result per request, in order, over one DecideStream.

        Up to `window` requests are in flight (the iterable is read ahead that far). `timeout`
        bounds each wait for a response. A broken stream is reopened (UNAVAILABLE, with the
        retry policy's backoff) and the unanswered requests are re-sent (decisions are
        idempotent); when it cannot be, the failure policy answers them and the next
        requests try a fresh stream. Invalid entries yield results with `error`.

            with client.stream(events) as results:
                for event, result in zip(events, results): ...
        """
        if window < 1:
            raise ValueError("window must be at least 1")
        if self._closed:
            raise ClientClosedError("the client is closed")
        return _SyncStream(self, requests, window, self._core.timeout if timeout is None else timeout)


_END: Final = object()  # request iterator / response queue terminator


@dataclass(slots=True)
class _Entry:
    request: Request
    msg: decision_pb2.DecideRequest | None  # None: answered locally (`result`), never sent
    result: DecideResult | None = None


def _drain_responses(call: Any, out: queue.SimpleQueue[object]) -> None:
    """Reader thread of one sync DecideStream call: responses, then _END or the error."""
    try:
        for response in call:
            out.put(response)
        out.put(_END)
    except grpc.RpcError as e:
        out.put(e)
    except Exception as e:  # surfaced to the consumer as INTERNAL, never lost
        out.put(Internal(f"stream reader failed: {e!r}"))


class _SyncStream:
    """One pipelined DecideStream for `ConsentClient.stream`; reopened on UNAVAILABLE."""

    def __init__(self, client: ConsentClient, requests: Iterable[RequestLike], window: int, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive (seconds)")
        self._client = client
        self._requests = iter(requests)
        self._window = window
        self._timeout = timeout
        self._call: Any = None
        self._send: queue.SimpleQueue[object] | None = None
        self._recv: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._reader: threading.Thread | None = None
        self._results: Generator[DecideResult, None, None] | None = None

    def __enter__(self) -> Iterator[DecideResult]:
        self._results = self._run()
        return self._results

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._results is not None:
            self._results.close()
        self._teardown()

    def _open(self, pending: deque[_Entry], exhausted: bool) -> None:
        if self._client._closed:
            raise ClientClosedError("the client is closed")
        send: queue.SimpleQueue[object] = queue.SimpleQueue()
        recv: queue.SimpleQueue[object] = queue.SimpleQueue()
        for entry in pending:
            if entry.msg is not None:
                send.put(entry.msg)
        if exhausted:
            send.put(_END)
        try:
            call = self._client._stub.DecideStream(iter(send.get, _END))
        except ValueError as e:
            raise ClientClosedError(str(e)) from None
        reader = threading.Thread(target=_drain_responses, args=(call, recv), name="consent-stream-reader", daemon=True)
        reader.start()
        self._call, self._send, self._recv, self._reader = call, send, recv, reader

    def _teardown(self) -> None:
        call, send, reader = self._call, self._send, self._reader
        self._call = self._send = self._reader = None
        if send is not None:
            send.put(_END)  # releases gRPC's request-consuming thread
        if call is not None:
            call.cancel()
        if reader is not None:
            reader.join(timeout=self._timeout)

    def _run(self) -> Generator[DecideResult, None, None]:
        core = self._client._core
        pending: deque[_Entry] = deque()  # read from the iterable, not yet yielded, in order
        exhausted = False
        attempt = 0
        while True:
            if self._call is None and (not exhausted or any(e.msg is not None for e in pending)):
                self._open(pending, exhausted)
            while not exhausted and len(pending) < self._window:
                try:
                    item = next(self._requests)
                except StopIteration:
                    exhausted = True
                    assert self._send is not None
                    self._send.put(_END)  # half-close: the sidecar ends the stream after the last answer
                    break
                req = _as_request(item)
                try:
                    msg = _to_proto(req)
                except InvalidArgument as e:
                    pending.append(_Entry(req, None, DecideResult(error=e.message)))
                    continue
                pending.append(_Entry(req, msg))
                assert self._send is not None
                self._send.put(msg)
            if not pending:
                if exhausted:
                    return
                continue
            head = pending[0]
            if head.result is not None:
                pending.popleft()
                yield head.result
                continue
            answer: object
            try:
                answer = self._recv.get(timeout=self._timeout)
            except queue.Empty:
                answer = DeadlineExceeded(f"no DecideStream response within {self._timeout}s")
            if isinstance(answer, decision_pb2.DecideResponse):
                attempt = 0
                pending.popleft()
                yield DecideResult.from_proto(answer)
                continue
            if isinstance(answer, grpc.RpcError):
                err = from_rpc_error(answer, attempts=attempt + 1)
            elif isinstance(answer, ConsentError):
                err = answer
            else:  # the sidecar ended the stream with requests unanswered
                err = Unavailable("the sidecar closed the stream with requests in flight", attempts=attempt + 1)
            self._teardown()
            attempt += 1
            delay = core.retry_delay(err, attempt, time.monotonic() + self._timeout)
            if delay is not None:
                time.sleep(delay)  # backoff before reopening; bounded by the retry policy
                continue
            attempt = 0
            while pending:  # the failure policy answers what was in flight (or raises)
                entry = pending.popleft()
                yield entry.result if entry.result is not None else core.fallback_entry(entry.request, err)


# -- the async client ---------------------------------------------------------------------


class _AsyncShortcuts:
    """`decide` and `decide_event` in terms of `decide_request`, for every async decider."""

    async def decide_request(
        self, request: RequestLike, *, timeout: float | None = None,  # noqa: ASYNC109 - a per-call gRPC deadline
    ) -> DecideResult:
        raise NotImplementedError

    async def decide(
        self,
        destinations: Sequence[str] = (),
        consent: Mapping[str, bool] | None = None,
        *,
        explain: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 - a per-call gRPC deadline
    ) -> DecideResult:
        """See ConsentClient.decide."""
        req = Request(as_destinations(destinations), consent, None, explain)
        return await self.decide_request(req, timeout=timeout)

    async def decide_event(
        self,
        event: Mapping[str, Any] | bytes | str,
        destinations: Sequence[str] = (),
        *,
        explain: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 - a per-call gRPC deadline
    ) -> DecideResult:
        """See ConsentClient.decide_event."""
        req = Request(as_destinations(destinations), None, event, explain)
        return await self.decide_request(req, timeout=timeout)


class AsyncConsentClient(_ClientBase, _AsyncShortcuts):
    """asyncio client of the sidecar's DecisionService (grpc.aio); same options as ConsentClient.

    The channels are created on first use inside the running event loop and reused by every
    call, so use one client per event loop; close it with `await client.close()` or
    `async with`.
    """

    def _open_channel(self, credentials: grpc.ChannelCredentials | None) -> None:
        # grpc.aio channels belong to an event loop: created on first use, inside it.
        self._credentials = credentials
        self._channels: list[grpc.aio.Channel] = []
        self._stubs: Iterator[decision_pb2_grpc.DecisionServiceStub] | None = None
        self._closed = False

    def _stub(self) -> decision_pb2_grpc.DecisionServiceStub:
        """The next connection's stub; the channels are opened on first use."""
        if self._closed:
            raise ClientClosedError("the client is closed")
        if self._stubs is None:
            opts = self._core.channel_options
            target = self._core.target
            self._channels = [
                grpc.aio.secure_channel(target, self._credentials, options=opts)
                if self._credentials is not None
                else grpc.aio.insecure_channel(target, options=opts)
                for _ in range(self._core.connections)
            ]
            self._stubs = itertools.cycle(
                [decision_pb2_grpc.DecisionServiceStub(c) for c in self._channels]  # type: ignore[no-untyped-call]
            )
        return next(self._stubs)

    async def close(self) -> None:
        """Closes the channels (in-flight calls are cancelled). Idempotent."""
        self._closed = True
        channels, self._channels, self._stubs = self._channels, [], None
        for channel in channels:
            await channel.close()

    async def __aenter__(self) -> AsyncConsentClient:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _unary(
        self, name: str, msg: Any, timeout: float | None,  # noqa: ASYNC109 - a per-call gRPC deadline
    ) -> Any:
        method = getattr(self._stub(), name)
        core = self._core
        deadline = core.deadline_of(timeout)
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:  # gRPC reads a zero timeout as "no deadline"
                raise DeadlineExceeded("the deadline passed before the call was made", attempts=attempt)
            try:
                return await method(msg, timeout=remaining)
            except grpc.RpcError as e:
                err = from_rpc_error(e, attempts=attempt)
            delay = core.retry_delay(err, attempt, deadline)
            if delay is None:
                raise err
            await asyncio.sleep(delay)  # backoff between attempts, bounded by the deadline

    async def decide_request(
        self, request: RequestLike, *, timeout: float | None = None,  # noqa: ASYNC109 - a per-call gRPC deadline
    ) -> DecideResult:
        """See ConsentClient.decide_request."""
        req = _as_request(request)
        msg = _to_proto(req)
        try:
            response = await self._unary("Decide", msg, timeout)
        except ConsentError as err:
            return self._core.fallback(req, err)
        return DecideResult.from_proto(response)

    async def decide_many(
        self, requests: Iterable[RequestLike], *, timeout: float | None = None,  # noqa: ASYNC109 - per-RPC deadline
    ) -> list[DecideResult]:
        """See ConsentClient.decide_many."""
        reqs = [_as_request(r) for r in requests]
        out: list[DecideResult] = []
        for chunk in _chunks(reqs, self._core.batch_size):
            msgs, local = _prepare(chunk)
            if not msgs:  # nothing the sidecar could decide
                out.extend(local[i] for i in range(len(chunk)))
                continue
            try:
                response = await self._unary("DecideBatch", decision_pb2.DecideBatchRequest(requests=msgs), timeout)
            except (Unavailable, DeadlineExceeded) as err:
                out.extend(local[i] if i in local else self._core.fallback_entry(r, err) for i, r in enumerate(chunk))
                continue
            out.extend(_merge(chunk, local, response))
        return out

    def stream(self, *, window: int = DEFAULT_WINDOW, timeout: float | None = None) -> AsyncDecisionStream:
        """One pipelined DecideStream: `async with client.stream() as s: r = await s.decide(...)`.

        Concurrent `decide` calls (tasks, gather) share the stream with up to `window` in flight.
        """
        if window < 1:
            raise ValueError("window must be at least 1")
        return AsyncDecisionStream(self, window=window, timeout=self._core.timeout if timeout is None else timeout)


@dataclass(slots=True)
class _Pending:
    request: Request
    msg: decision_pb2.DecideRequest
    future: asyncio.Future[decision_pb2.DecideResponse | ConsentError]


def _task_cancelling() -> bool:
    """Whether the current task itself is being cancelled (not merely a gRPC call we cancelled)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class AsyncDecisionStream(_AsyncShortcuts):
    """A DecideStream shared by concurrent `decide` calls; responses matched to requests by order.

    At most `window` requests are in flight. A call queues its request for the stream's
    writer task in the same step as it joins the in-flight list, so the order of writes is
    the order of that list whatever happens to callers (a cancelled caller cannot leave a
    request unsent). Each call's deadline (`timeout`, default the stream's) covers waiting
    for the window and the answer. When a deadline passes, the stream is reset: every
    request in flight is answered by the failure policy (answers come in order, so the later
    ones are stuck behind it) and the next call opens a fresh stream. A stream broken by
    UNAVAILABLE is reopened with backoff and the unanswered requests re-sent; after the
    retries, the failure policy answers them. Invalid entries answer with `error` (see
    DecideResult.raise_for_error).
    """

    def __init__(self, client: AsyncConsentClient, *, window: int, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive (seconds)")
        self._client = client
        self._window = asyncio.Semaphore(window)
        self._timeout = timeout
        self._call: Any = None
        self._outbox: asyncio.Queue[decision_pb2.DecideRequest | None] | None = None  # None = half-close
        self._tasks: list[asyncio.Task[None]] = []  # the current call's writer and reader
        self._pending: deque[_Pending] = deque()  # queued or written, unanswered, in order
        self._gen = 0  # bumped whenever a call is opened or abandoned
        self._attempt = 0
        self._recovering = False  # between a broken call and its replacement: requests wait in _pending
        self._closed = False

    async def __aenter__(self) -> AsyncDecisionStream:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close(cancel=et is not None)

    async def decide_request(
        self, request: RequestLike, *, timeout: float | None = None,  # noqa: ASYNC109 - a per-call gRPC deadline
    ) -> DecideResult:
        if self._closed:
            raise ClientClosedError("the stream is closed")
        req = _as_request(request)
        try:
            msg = _to_proto(req)
        except InvalidArgument as e:
            return DecideResult(error=e.message)
        t = self._timeout if timeout is None else timeout
        core = self._client._core
        fut: asyncio.Future[decision_pb2.DecideResponse | ConsentError] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(t), self._window:
                if self._closed:
                    raise ClientClosedError("the stream is closed")
                # No await from here to the put: joining _pending and queueing the write is one step.
                if self._call is None and not self._recovering:
                    self._open()
                self._pending.append(_Pending(req, msg, fut))
                if self._outbox is not None:
                    self._outbox.put_nowait(msg)
                answer = await fut
        except TimeoutError:
            err = DeadlineExceeded(f"no DecideStream response within {t}s")
            self._abandon(err)
            return core.fallback_entry(req, err)
        if isinstance(answer, ConsentError):
            return core.fallback_entry(req, answer)
        return DecideResult.from_proto(answer)

    def _open(self) -> None:
        """Opens a new call with its writer and reader tasks; re-queues every request in flight."""
        self._gen += 1
        gen = self._gen
        call = self._client._stub().DecideStream()  # no stream deadline: each request has its own
        outbox: asyncio.Queue[decision_pb2.DecideRequest | None] = asyncio.Queue()
        for entry in self._pending:
            outbox.put_nowait(entry.msg)
        loop = asyncio.get_running_loop()
        self._call, self._outbox = call, outbox
        self._tasks = [loop.create_task(self._write(call, outbox)), loop.create_task(self._read(call, gen))]

    def _drop_call(self) -> None:
        """Cancels the current call and its writer (never the running task itself)."""
        call, self._call, self._outbox = self._call, None, None
        tasks, self._tasks = self._tasks, []
        current = asyncio.current_task()
        for task in tasks:
            if task is not current:
                task.cancel()
        if call is not None:
            call.cancel()

    @staticmethod
    async def _write(call: Any, outbox: asyncio.Queue[decision_pb2.DecideRequest | None]) -> None:
        while True:
            msg = await outbox.get()
            try:
                if msg is None:
                    await call.done_writing()
                    return
                await call.write(msg)
            except (grpc.RpcError, asyncio.InvalidStateError):
                return  # the call failed: its reader sees the status and recovers
            except asyncio.CancelledError:
                if _task_cancelling():
                    raise
                return  # grpc raises CancelledError on a call we cancelled

    async def _read(self, call: Any, gen: int) -> None:
        err: ConsentError | None = None
        try:
            while True:
                response = await call.read()
                if gen != self._gen:
                    return
                if response is grpc.aio.EOF:
                    break
                if not self._pending:
                    err = Internal("DecideStream answered more responses than requests")
                    break
                entry = self._pending.popleft()
                self._attempt = 0
                if not entry.future.done():
                    entry.future.set_result(response)
        except grpc.RpcError as e:
            err = from_rpc_error(e, attempts=self._attempt + 1)
        except asyncio.CancelledError:
            if _task_cancelling():
                raise
            if gen != self._gen:
                return  # we abandoned this call (reset or close); whoever did resolved its requests
            err = Unavailable("the stream was cancelled with requests in flight")
        if gen != self._gen:
            return
        if err is None:
            if not self._pending:
                return
            err = Unavailable("the sidecar closed the stream with requests in flight")
        await self._recover(gen, err)

    async def _recover(self, gen: int, err: ConsentError) -> None:
        """Runs in the broken call's reader: reopen after a backoff, or let the failure policy answer."""
        core = self._client._core
        self._attempt += 1
        delay = None if self._closed else core.retry_delay(err, self._attempt, time.monotonic() + self._timeout)
        if delay is None:
            self._abandon(err)
            return
        self._drop_call()
        self._recovering = True  # new requests wait in _pending; _open re-queues them all
        try:
            await asyncio.sleep(delay)
        finally:
            if gen == self._gen:
                self._recovering = False
        if gen != self._gen or self._closed:
            return  # reset, reopened or closed meanwhile
        try:
            self._open()
        except ClientClosedError as e:
            self._abandon(e)

    def _abandon(self, err: ConsentError) -> None:
        """Drops the current call; every request in flight is answered with `err` (then the policy)."""
        self._gen += 1
        self._attempt = 0
        self._recovering = False
        self._drop_call()
        pending, self._pending = self._pending, deque()
        for entry in pending:
            if not entry.future.done():
                entry.future.set_result(err)

    async def close(self, *, cancel: bool = False) -> None:
        """Waits (up to the stream's timeout) for the answers in flight, then ends the stream.

        With cancel=True (or once the wait is over), calls still waiting raise ClientClosedError.
        """
        if self._closed:
            return
        self._closed = True
        pending = [e.future for e in self._pending]
        if pending and not cancel:
            await asyncio.wait(pending, timeout=self._timeout)
        if self._outbox is not None and not cancel:
            self._outbox.put_nowait(None)  # half-close; the sidecar then ends the stream
            tasks = list(self._tasks)
            if tasks:
                await asyncio.wait(tasks, timeout=self._timeout)
        self._abandon(ClientClosedError("the stream was closed with requests in flight"))
