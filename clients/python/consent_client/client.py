"""`ConsentClient`: the blocking client of the sidecar's DecisionService, and its pipelined `stream()`.

Owns the sync transport: one set of channels per client (reused by every call, closed by
`close()` or the context manager), the retry loop of each unary call (its steps are shared
with the async client in `consent_client._retry`), and `_SyncStream`, which keeps one
DecideStream open with a reader thread and a bounded read-ahead window, matching responses to
requests by order. Deadlines, retries and the failure policy are `consent_client._policy`'s;
requests and responses are converted by `consent_client._wire`. Never logs payloads.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

import grpc
from consent.v1 import decision_pb2, decision_pb2_grpc

from consent_client._policy import DEFAULT_WINDOW, ClientBase, round_robin
from consent_client._retry import sidecar_error
from consent_client._wire import RequestLike, as_request, batches, to_proto
from consent_client.errors import (
    ClientClosedError,
    ConsentError,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    Unavailable,
)
from consent_client.results import DecideResult, Request, as_destinations

__all__ = ["ConsentClient"]


class ConsentClient(ClientBase):
    """Blocking client of the sidecar's DecisionService. Thread-safe; its channels are reused.

    target: "host:port" or "unix:/path/to.sock" (also "unix:///abs/path").
    timeout: default deadline of every call in seconds, retries included; each call can
        override it with `timeout=`. On `stream()` it bounds the wait for each response.
    retry: retries of UNAVAILABLE (see RetryPolicy); `RetryPolicy(max_attempts=1)` disables them.
    failure_policy: "fail_closed" (default), "fail_open", "embedded" or "raise" (see FailurePolicy).
    mappings_path: the mapping file, for failure_policy "embedded" and to let fail_closed /
        fail_open know the mapping; `watch_mappings` re-reads it when it changes. Needs
        consent-core (`pip install 'consent-client[embedded]'`), imported only then.
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
        self._stubs = round_robin(self._channels)
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
        attempts = self._core.attempts(timeout)
        while True:
            remaining = attempts.start()
            try:
                return method(msg, timeout=remaining)
            except grpc.RpcError as e:
                err = attempts.failed(e)
            except ValueError as e:  # grpc: "Cannot invoke RPC on closed channel!"
                raise ClientClosedError(str(e)) from None
            time.sleep(attempts.backoff(err))  # raises err when no retry is due; bounded by the deadline

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
        req = as_request(request)
        msg = to_proto(req)
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
        out: list[DecideResult] = []
        for chunk in batches(requests, self._core.batch_size):
            if chunk.message is None:  # nothing the sidecar could decide
                out.extend(chunk.local_results())
                continue
            try:
                response = self._unary(self._stub.DecideBatch, chunk.message, timeout)
            except (Unavailable, DeadlineExceeded) as err:
                out.extend(chunk.fallback(self._core.fallback_entry, err))
                continue
            out.extend(chunk.results(response))
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
                req = as_request(item)
                try:
                    msg = to_proto(req)
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
                err = sidecar_error(answer, attempts=attempt + 1)
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
