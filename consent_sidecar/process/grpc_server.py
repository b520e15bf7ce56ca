"""Builds one grpc.aio server the way every sidecar process serves: options, health, reflection, listeners.

The one place that knows the server options (message-size limits, SO_REUSEPORT), registers
grpc.health.v1 and server reflection beside the given services, binds TCP and unix listeners
with the operating system's reason when a bind fails, and replaces a stale unix socket file
without ever deleting a live socket or a non-socket. Used by the main process (`listeners`) and
by every `--workers` process (`workers`), so both serve exactly the same way.
Must never decide which services a listener serves (the callers do) nor touch the policy.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import grpc.aio
from consent_core.errors import StartupError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from consent_sidecar.config import ServeConfig
from consent_sidecar.process.addresses import Address, AddressError, parse_address

__all__ = ["GrpcServer", "ListenError", "ServiceAdder", "listen_address", "server_options"]

# A service registration: adds a servicer to a server and returns the service's full name.
ServiceAdder = Callable[[grpc.aio.Server], str]


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
        # gRPC sets SO_REUSEPORT by default: a second sidecar would then "bind" a taken port.
        # Workers turn it on deliberately, to share the parent's reserved ports.
        ("grpc.so_reuseport", 1 if reuseport else 0),
    ]


class GrpcServer:
    """One grpc.aio server with its health servicer and reflection; the services are known before it starts.

    `bind` opens every address or raises ListenError; `start` serves and marks everything
    SERVING; `stop` drains for the grace period and removes the unix socket files it created.
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
        self.service_names = tuple(add(self.server) for add in services)
        reflection.enable_server_reflection(
            (*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.bound: list[str] = []  # the addresses as bound, real ports filled in
        self._sockets: list[str] = []

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

    async def start(self) -> None:
        await self.server.start()
        # The policy is loaded before any server starts, so everything is SERVING from the first check.
        for name in (health.OVERALL_HEALTH, *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def enter_graceful_shutdown(self) -> None:
        """Health NOT_SERVING for every service, so balancers move away before the drain."""
        await self.health.enter_graceful_shutdown()

    async def stop(self, grace: float | None) -> None:
        """Stops accepting, drains in-flight RPCs up to `grace` seconds (None: at once), removes sockets."""
        await self.server.stop(grace)
        self.remove_sockets()

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
