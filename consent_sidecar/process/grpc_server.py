"""Builds one grpc.aio server the way every sidecar process serves: options, health, reflection, listeners.

The one place that knows the server options (message-size limits, idle connections, streams
per connection, SO_REUSEPORT), registers grpc.health.v1 and server reflection beside the given
services (theirs behind the drain `Gate`), binds TCP and unix listeners with the operating
system's reason when a bind fails, replaces a stale unix socket file without ever deleting a
live socket or a non-socket, and drains: health NOT_SERVING, refuse what arrives after the
fence, finish what arrived before it (`drain`). Used by the main process (`listeners`) and by
every `--workers` process (`workers`), so both serve and drain exactly the same way.
Must never decide which services a listener serves (the callers do) nor touch the policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import stat
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, cast

import grpc
import grpc.aio
from consent_core.errors import StartupError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from consent_sidecar.config import ServeConfig
from consent_sidecar.process.addresses import Address, AddressError, format_host_port, parse_address
from consent_sidecar.process.drain import Gate, GatedRegistrar

__all__ = ["GrpcServer", "ListenError", "ServiceAdder", "listen_address", "server_options"]

# A service registration: adds a servicer to a server and returns the service's full name.
ServiceAdder = Callable[[grpc.aio.Server], str]


LINGER: Final = 0.25  # seconds the gate keeps answering UNAVAILABLE after the last call ended


class ListenError(StartupError):
    """A listener address is malformed or cannot be bound; the message says which and why."""


def listen_address(raw: str) -> Address:
    """`parse_address` for a listener: a malformed address is a ListenError naming it."""
    try:
        return parse_address(raw)
    except AddressError as e:
        raise ListenError(f"listen address {e.raw!r}: {e.reason}") from None


def server_options(config: ServeConfig, *, reuseport: bool = False) -> list[tuple[str, Any]]:
    """The channel arguments of every sidecar server; `reuseport` for ports shared by --workers."""
    limit = config.limits.max_message_bytes
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        # An idle connection costs a file descriptor and buffers for nothing: closed (GOAWAY) after
        # --max-connection-idle; a connection may not open more than --max-concurrent-streams at once.
        ("grpc.max_connection_idle_ms", max(1, round(config.max_connection_idle * 1000))),
        ("grpc.max_concurrent_streams", config.max_concurrent_streams),
        # gRPC sets SO_REUSEPORT by default: a second sidecar would then "bind" a taken port.
        # Workers turn it on deliberately, to share the parent's reserved ports.
        ("grpc.so_reuseport", 1 if reuseport else 0),
    ]


class GrpcServer:
    """One grpc.aio server with its health servicer and reflection; the services are known before it starts.

    `bind` opens every address or raises ListenError; `start` serves and marks everything
    SERVING; `enter_graceful_shutdown` turns health NOT_SERVING and closes the gate; `stop`
    drains for the grace period and removes the unix socket files it created.
    """

    def __init__(
        self,
        name: str,
        addresses: Sequence[Address],
        services: Sequence[ServiceAdder],
        config: ServeConfig,
        *,
        credentials: grpc.ServerCredentials | None = None,
        reuseport: bool = False,
    ) -> None:
        self.name = name  # shown in errors: "decision", "admin", "worker 2"
        self.addresses = tuple(addresses)
        self.credentials = credentials  # None: plaintext; else TLS (mTLS when it requires client certificates)
        self.reuseport = reuseport
        self.server = grpc.aio.server(options=server_options(config, reuseport=reuseport))
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.gate = Gate(name)
        registrar = cast(grpc.aio.Server, GatedRegistrar(self.server, self.gate))  # has what the adders call
        self.service_names = tuple(add(registrar) for add in services)
        reflection.enable_server_reflection(
            (*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.bound: list[str] = []  # the addresses as bound, real ports filled in
        self._sockets: list[str] = []
        self._fence_target: str | None = None  # where this server's drain fences are sent (bind decides)
        self._stopping: asyncio.Task[None] | None = None
        self._forced = asyncio.Event()  # stop(None): no more waiting of any kind

    def bind(self) -> None:
        """Opens every address (not yet serving); raises ListenError with the OS's reason."""
        for address in self.addresses:
            if address.unix_path is not None:
                _prepare_unix_socket(address)
            try:
                if self.credentials is None:
                    port = self.server.add_insecure_port(address.target)
                else:
                    port = self.server.add_secure_port(address.target, self.credentials)
            except RuntimeError:
                port = 0
            # gRPC reports a unix socket's port as 0 even when it bound: the file tells.
            failed = not os.path.exists(address.unix_path) if address.unix_path is not None else port == 0
            if failed:
                why = _why_bind_failed(address, reuseport=self.reuseport)
                raise ListenError(f"cannot listen on {address.raw} ({self.name}): {why}")
            if address.unix_path is not None:
                self._sockets.append(address.unix_path)
            self.bound.append(address.bound(port))
        self._fence_target = self._bind_fence()

    def _bind_fence(self) -> str | None:
        """Where the drain's fences reach this very server (None: nowhere; the drain then does without).

        A plaintext server is dialled on its own address (a unix socket if it has one). A shared
        SO_REUSEPORT port could hand the fence to another worker, and a TLS server cannot be
        dialled without a client certificate: those get a private abstract unix socket
        (Linux), on which the TLS server's gate answers nothing but fences.
        """
        if self.credentials is None and not self.reuseport:
            unix = next((a for a in self.addresses if a.unix_path is not None), None)
            if unix is not None:
                return unix.target
            tcp = self.addresses[0]
            host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(tcp.host, tcp.host)
            return format_host_port(host, int(self.bound[0].rpartition(":")[2]))
        if self.credentials is not None and any(a.unix_path is not None for a in self.addresses):
            return None  # its own clients are unix peers too: the gate could not tell fences' port apart
        private = f"unix-abstract:consent-sidecar-{os.getpid()}-{secrets.token_hex(8)}"
        try:
            if self.server.add_insecure_port(private) == 0:
                return None
        except RuntimeError:
            return None
        if self.credentials is not None:
            self.gate.guard_fence_port()
        return private

    async def start(self) -> None:
        await self.server.start()
        # The policy is loaded before any server starts, so everything is SERVING from the first check.
        for name in (health.OVERALL_HEALTH, *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def set_health(self, name: str, serving: bool) -> None:
        """Reports `name` SERVING or NOT_SERVING (ignored once the drain has begun: all is NOT_SERVING)."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        await self.health.set(name, status)

    async def enter_graceful_shutdown(self) -> None:
        """Closes the gate, then health NOT_SERVING for every service (balancers move away first).

        The gate's fences are on the wire before health changes, so a call made by anyone who
        saw NOT_SERVING lines up behind them. From here calls that arrived before are still
        served and new ones are refused with UNAVAILABLE; health keeps answering, NOT_SERVING.
        """
        await self.gate.close(self._fence_target)
        await self.health.enter_graceful_shutdown()
        self.gate.arm()

    async def stop(self, grace: float | None) -> None:
        """Drains up to `grace` seconds (None: cancels at once), stops, removes sockets.

        Waits for the gate's fences (every call received before `enter_graceful_shutdown` is then
        running) and for those calls to end, refusing new ones, then stops the core server with
        what is left of `grace` and cancels whatever still runs after it. Calling it again with None while it drains
        cuts the drain short.
        """
        if grace is None:
            self._forced.set()
            self.gate.force()  # nothing is waited for: whatever is still queued is refused
            await self.server.stop(None)
            if self._stopping is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._stopping
        else:
            if not self.gate.closing:
                await self.enter_graceful_shutdown()
            self._stopping = asyncio.ensure_future(self._drain(grace))
            try:
                await asyncio.shield(self._stopping)
            except asyncio.CancelledError:
                self._stopping.cancel()
                raise
        await self.gate.aclose()
        self.remove_sockets()

    async def _drain(self, grace: float) -> None:
        deadline = time.monotonic() + grace
        if await self.gate.wait_drained(grace):
            # A client often sends its next call the moment it has an answer; once the core server
            # stops, a call on a connection that has not yet seen its GOAWAY is CANCELLED. Until
            # then the gate answers UNAVAILABLE, so it lingers that moment longer.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, min(LINGER, deadline - time.monotonic()))):
                    await self._forced.wait()
        await self.server.stop(max(0.0, deadline - time.monotonic()))

    def remove_sockets(self) -> None:
        for path in self._sockets:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._sockets.clear()


def _prepare_unix_socket(address: Address) -> None:
    """Removes a stale socket file left by a crashed run; refuses a live socket or a non-socket."""
    path = address.unix_path
    assert path is not None
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ListenError(f"listen address {address.raw!r}: {path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # nobody answers: stale
            return
    raise ListenError(f"listen address {address.raw!r}: {path} is in use by a running process")


def _why_bind_failed(address: Address, *, reuseport: bool) -> str:
    """gRPC says only "failed to bind"; re-trying the bind ourselves recovers the OS reason."""
    try:
        if address.unix_path is not None:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.bind(address.unix_path)
            os.unlink(address.unix_path)
        else:
            with socket.create_server((address.host, address.port), family=address.family, reuse_port=reuseport):
                pass
    except OSError as e:
        return e.strerror or str(e)
    return "gRPC could not bind it (set GRPC_VERBOSITY=debug for details)"
