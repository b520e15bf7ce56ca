"""`AsyncConsentClient`: the asyncio client of the sidecar's DecisionService (grpc.aio), and its shared stream.

Owns the async transport: channels opened on first use inside the running event loop, the
retry loop of each unary call (its steps are shared with the sync client in
`consent_client._retry`, so the two loops differ only in how they wait), and
`AsyncDecisionStream`, one DecideStream shared by concurrent callers with a bounded
in-flight window, matching responses to requests by order. Deadlines, retries and the
failure policy are `consent_client._policy`'s; requests and responses are converted by
`consent_client._wire`. Never blocks the event loop, never logs payloads.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc
import grpc.aio
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

__all__ = ["AsyncConsentClient", "AsyncDecisionStream"]


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


class AsyncConsentClient(ClientBase, _AsyncShortcuts):
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
            self._stubs = round_robin(self._channels)
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
        attempts = self._core.attempts(timeout)
        while True:
            remaining = attempts.start()
            try:
                return await method(msg, timeout=remaining)
            except grpc.RpcError as e:
                err = attempts.failed(e)
            await asyncio.sleep(attempts.backoff(err))  # raises err when no retry is due; bounded by the deadline

    async def decide_request(
        self, request: RequestLike, *, timeout: float | None = None,  # noqa: ASYNC109 - a per-call gRPC deadline
    ) -> DecideResult:
        """See ConsentClient.decide_request."""
        req = as_request(request)
        msg = to_proto(req)
        try:
            response = await self._unary("Decide", msg, timeout)
        except ConsentError as err:
            return self._core.fallback(req, err)
        return DecideResult.from_proto(response)

    async def decide_many(
        self, requests: Iterable[RequestLike], *, timeout: float | None = None,  # noqa: ASYNC109 - per-RPC deadline
    ) -> list[DecideResult]:
        """See ConsentClient.decide_many."""
        out: list[DecideResult] = []
        for chunk in batches(requests, self._core.batch_size):
            if chunk.message is None:  # nothing the sidecar could decide
                out.extend(chunk.local_results())
                continue
            try:
                response = await self._unary("DecideBatch", chunk.message, timeout)
            except (Unavailable, DeadlineExceeded) as err:
                out.extend(chunk.fallback(self._core.fallback_entry, err))
                continue
            out.extend(chunk.results(response))
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
        req = as_request(request)
        try:
            msg = to_proto(req)
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
            err = sidecar_error(e, attempts=self._attempt + 1)
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
