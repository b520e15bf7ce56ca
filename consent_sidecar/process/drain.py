"""The graceful drain of one gRPC server: calls received before SIGTERM complete, later ones get UNAVAILABLE.

Why this exists: grpc.aio takes calls from gRPC core one at a time, on the event loop. While a
handler holds the loop (a 10,000-entry DecideBatch), calls that have already arrived wait in
core, unmatched; `server.stop(grace)` makes core cancel every one of them at once (the client
sees CANCELLED within milliseconds, whatever the grace period). So the sidecar does not stop
the core server when SIGTERM arrives. It closes a `Gate` instead and sends itself one *fence*
call per registered method (core queues the calls of each method in arrival order): every call
of that method taken before its fence arrived before the drain began and is served; every call
taken after it is new and is refused with UNAVAILABLE by the gate. Once every fence is through
and the calls taken before them have ended (or the grace period is over) the core server stops,
cancelling whatever still runs; until then new calls keep getting the gate's clean UNAVAILABLE
rather than core's CANCELLED.

The fences are written from a thread of their own (a busy event loop cannot hold them back)
before health turns NOT_SERVING, so a call made by anyone who saw NOT_SERVING lines up behind
them. The drain begins when the event loop handles SIGTERM: a call arriving while a handler
holds the loop at that moment still gets in ahead of the fences, and is served.

`GatedRegistrar` stands in for the grpc.aio server while services are added, so that each of
their method handlers checks the gate first (an attribute read while open); health and
reflection are added to the server directly and never refused (health answers NOT_SERVING).
Fences carry a per-process random nonce in metadata: no client can fence a method.
Must never decide which services a server has, nor touch the policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final, cast

import grpc
import grpc.aio

from consent_sidecar.observe import logs

__all__ = ["FENCE_HEADER", "FENCE_SEND_TIMEOUT", "SHUTTING_DOWN", "Gate", "GatedRegistrar", "gated_handler"]

FENCE_HEADER: Final = "x-consent-sidecar-fence"
SHUTTING_DOWN: Final = "the sidecar is shutting down: retry on another instance or after its restart"
_FENCE_DETAIL: Final = "consent-sidecar drain fence"
FENCE_SEND_TIMEOUT: Final = 2.0  # seconds to get the fences onto the wire before health turns NOT_SERVING

_log = logs.get_logger(__name__)


class Gate:
    """Open while serving; once closed and armed, each method refuses the calls taken after its own fence."""

    def __init__(self, name: str) -> None:
        self.name = name  # the server's name, in logs
        self.checking = False  # closing or fence_port_only: each call asks `check` first
        self.closing = False  # fences sent (or being sent)
        self.armed = False  # health says NOT_SERVING: calls taken after their method's fence are refused
        self.fence_port_only = False  # a TLS server: its private fence socket must answer nothing else
        self.methods: list[str] = []  # every gated method path, e.g. /consent.v1.DecisionService/Decide
        self.fenced: set[str] = set()  # methods whose fence has come through: later calls are new
        self.inflight = 0  # gated calls running now
        self.nonce = secrets.token_hex(16)
        self._all_fenced = asyncio.Event()
        self._idle = asyncio.Event()  # set when closing and nothing gated runs
        self._sender: _FenceSender | None = None

    def fence_passed(self, method: str) -> None:
        self.fenced.add(method)
        if self.fenced.issuperset(self.methods):
            self._all_fenced.set()

    def is_fence(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> bool:
        for key, value in metadata or ():
            if key == FENCE_HEADER:
                return value == self.nonce
        return False

    def guard_fence_port(self) -> None:
        """This server's fences arrive on a private plaintext socket beside TLS: answer only them there."""
        self.fence_port_only = self.checking = True

    async def check(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Aborts the call unless it may be served: a fence, a new call while draining, a stranger on the fence port."""
        fence = self.is_fence(cast("Iterable[tuple[str, str | bytes]] | None", context.invocation_metadata()))
        if self.fence_port_only and not fence and context.peer().startswith("unix:"):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "this socket serves only the sidecar itself")
        if not self.closing:
            return
        if fence:
            self.fence_passed(method)
            await context.abort(grpc.StatusCode.UNAVAILABLE, _FENCE_DETAIL)
        if self.armed and method in self.fenced:
            await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
        # Taken before its method's fence: it arrived before the drain began, so it is served.

    def arm(self) -> None:
        """Health says NOT_SERVING now: from here calls behind a fence are refused."""
        self.armed = True

    def force(self) -> None:
        """Stops waiting for fences: every method counts as fenced (calls still queued are refused)."""
        self.closing = self.checking = self.armed = True
        for method in self.methods:
            self.fence_passed(method)
        self._all_fenced.set()

    async def close(self, target: str | None, send_within: float = FENCE_SEND_TIMEOUT) -> None:
        """Sends one fence per method to `target` (this server itself) and returns once they are written.

        Written means on the connection, so they are in core's queues before anyone can learn
        (from health) that the drain began: a call made after that lines up behind them. They
        are sent from a thread with a blocking channel, so a busy event loop cannot hold them
        back. Waits at most `send_within` seconds. Without a target every method counts as fenced
        at once: calls still waiting in core are then refused with UNAVAILABLE as they are taken.
        """
        if self.closing:
            return
        self.closing = self.checking = True
        if target is None or not self.methods:
            self.force()
            return
        loop = asyncio.get_running_loop()

        def from_thread(callback: Callable[..., None], *args: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
                loop.call_soon_threadsafe(callback, *args)

        sender = self._sender = _FenceSender(target, self.nonce, lambda m, e: from_thread(self._fence_failed, m, e))
        written = asyncio.Event()
        def send() -> None:
            sender.send(self.methods, send_within)
            from_thread(written.set)

        # A thread of its own, not the default executor: stuck writes may occupy that one.
        threading.Thread(target=send, name=f"drain-fences-{self.name}", daemon=True).start()
        try:
            async with asyncio.timeout(send_within):
                await written.wait()
        except TimeoutError:
            pass
        if not sender.written:
            _log.warning("drain fences not written in time: new calls may be served a little longer",
                         server=self.name, seconds=send_within)

    def _fence_failed(self, method: str, error: str) -> None:
        """A fence ended without reaching the gate: nothing more can be learnt, later calls are refused."""
        if method not in self.fenced:
            _log.warning("drain fence failed: refusing new calls without it", server=self.name, method=method,
                         error=error)
            self.fence_passed(method)

    def finished(self) -> None:
        """One gated call ended (called by the handlers, only while closing)."""
        if self.inflight == 0:
            self._idle.set()

    async def wait_drained(self, within: float) -> bool:
        """Waits until every fence is through and no call taken before them runs (True), at most `within` s."""
        try:
            async with asyncio.timeout(max(0.0, within)):
                await self._all_fenced.wait()
                if self.inflight:
                    self._idle.clear()
                    await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        if self._sender is not None:
            self._sender.close()
            self._sender = None


class _FenceSender:
    """The fences of one gate, on a blocking channel of their own (none of the event loop's machinery)."""

    def __init__(self, target: str, nonce: str, failed: Callable[[str, str], None]) -> None:
        # Its own connection (no shared subchannel): the fences must not queue behind anything.
        self._channel = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        self._metadata = ((FENCE_HEADER, nonce),)
        self._failed = failed
        self._futures: list[grpc.Future[Any]] = []
        self.written = False  # every fence is on its way (or already answered)

    def send(self, methods: Sequence[str], timeout: float) -> None:
        """Starts one fence per method; returns once every one's message is written or `timeout` passed."""
        written = [threading.Event() for _ in methods]
        for method, event in zip(methods, written, strict=True):
            # Stream-shaped on this side whatever the method is: gRPC asks for the next message
            # only once the first is written, which is how this side learns it is on its way.
            def one(event: threading.Event = event) -> Iterator[bytes]:
                yield b""
                event.set()

            call: Any = self._channel.stream_unary(method)
            future: grpc.Future[Any] = call.future(one(), metadata=self._metadata)
            future.add_done_callback(self._on_done(method, event))
            self._futures.append(future)
        deadline = time.monotonic() + timeout
        self.written = all(event.wait(max(0.0, deadline - time.monotonic())) for event in written)

    def _on_done(self, method: str, written: threading.Event) -> Callable[[grpc.Future[Any]], None]:
        def done(future: grpc.Future[Any]) -> None:
            written.set()  # answered or failed: either way nothing is left to write
            if future.cancelled():
                return
            error = future.exception()
            details = error.details() if isinstance(error, grpc.Call) else None
            if details != _FENCE_DETAIL:
                self._failed(method, str(error))

        return done

    def close(self) -> None:
        """Cancels the fences still open and closes the channel (cheap: never waits for the server)."""
        for future in self._futures:
            future.cancel()
        self._channel.close()


# -- handlers that check the gate --------------------------------------------------------------


def _unary_response(gate: Gate, method: str, behaviour: Any) -> Any:
    async def gated(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if gate.checking:
            await gate.check(method, context)
        gate.inflight += 1
        try:
            return await behaviour(request, context)
        finally:
            gate.inflight -= 1
            if gate.closing:
                gate.finished()

    return gated


def _stream_response(gate: Gate, method: str, behaviour: Any) -> Any:
    if inspect.iscoroutinefunction(behaviour):  # already the reader-writer form
        return _unary_response(gate, method, behaviour)

    # A coroutine handler writing through the context (grpc.aio's reader-writer form): the same
    # one loop over the handler's responses that grpc.aio itself runs for a generator, no extra layer.
    async def gated(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if gate.checking:
            await gate.check(method, context)
        gate.inflight += 1
        try:
            async for response in behaviour(request, context):
                await context.write(response)
        finally:
            gate.inflight -= 1
            if gate.closing:
                gate.finished()

    return gated


def gated_handler(gate: Gate, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` with its behaviour behind `gate` (a new handler of the same kind)."""
    h: Any = handler
    for kind, wrap in (
        ("unary_unary", _unary_response), ("stream_unary", _unary_response),
        ("unary_stream", _stream_response), ("stream_stream", _stream_response),
    ):
        behaviour = getattr(h, kind)
        if behaviour is not None:
            if not (inspect.iscoroutinefunction(behaviour) or inspect.isasyncgenfunction(behaviour)):
                raise TypeError(f"{method}: a gated handler must be async (sync handlers run in a thread pool)")
            replaced: grpc.RpcMethodHandler[Any, Any] = h._replace(**{kind: wrap(gate, method, behaviour)})
            return replaced
    return handler


class _GatedGeneric(grpc.GenericRpcHandler):
    """A generic handler whose method handlers check the gate (only reached for unregistered methods)."""

    def __init__(self, gate: Gate, inner: grpc.GenericRpcHandler) -> None:
        self._gate = gate
        self._inner = inner
        self._cache: dict[str, grpc.RpcMethodHandler[Any, Any] | None] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        if method not in self._cache:
            inner = self._inner.service(handler_call_details)
            self._cache[method] = None if inner is None else gated_handler(self._gate, method, inner)
        return self._cache[method]


class GatedRegistrar:
    """Takes the place of a grpc.aio server for a service's `add_*_to_server`: its handlers check `gate`."""

    def __init__(self, server: grpc.aio.Server, gate: Gate) -> None:
        self._server = server
        self._gate = gate

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(tuple(_GatedGeneric(self._gate, h) for h in handlers))

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        gated = {}
        for name, handler in handlers.items():
            method = f"/{service}/{name}"
            self._gate.methods.append(method)
            gated[name] = gated_handler(self._gate, method, handler)
        self._server.add_registered_method_handlers(service, gated)

