"""Serving the console: binds --listen, runs uvicorn (HTTPS with --tls-cert/--tls-key), logs requests.

`bind` opens the listening socket first (so port 0 works and the real address is known),
`serve` runs the app on it until SIGTERM/SIGINT or `stop` is set, draining open requests.
Request lines are logged by the app (`consent_sidecar.console.app.RequestLog`).
Must never serve plain HTTP on a non-loopback address without saying so in the log.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Final

import uvicorn

from consent_sidecar.console.app import create_app
from consent_sidecar.console.settings import ConsoleConfig, is_loopback, split_host_port
from consent_sidecar.observe import logs

__all__ = ["bind", "serve", "url_of"]

_log = logs.get_logger("consent_sidecar.console")
_GRACE: Final = 5  # seconds open requests may take to finish at shutdown


def bind(listen: str) -> socket.socket:
    """A listening TCP socket on `listen` (host:port; port 0 = any free port)."""
    host, port = split_host_port(listen)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket, config: ConsoleConfig) -> str:
    """The URL the console answers on, e.g. http://127.0.0.1:8080."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if config.https else 'http'}://{shown}:{port}"


class _Server(uvicorn.Server):
    """uvicorn's server, telling us once it listens."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()


async def serve(
    config: ConsoleConfig,
    sock: socket.socket,
    *,
    stop: asyncio.Event | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serves the console on `sock` until SIGTERM/SIGINT (main thread) or `stop`; then drains and returns.

    `ready(url)` is called once it accepts connections.
    """
    url = url_of(sock, config)
    host = split_host_port(config.listen)[0]
    if not config.https and not is_loopback(host):
        _log.warning(
            "serving the console over plain HTTP beyond this machine: tokens would cross the network in clear; "
            "use --tls-cert and --tls-key", url=url,
        )

    def started() -> None:
        _log.info("console listening", url=url, admin_address=config.admin_address)
        if ready is not None:
            ready(url)

    server = _Server(
        uvicorn.Config(
            create_app(config),
            loop="asyncio",
            lifespan="on",
            log_config=None,  # our logging (structlog) is configured by the caller
            access_log=False,  # the app logs requests itself, without query strings
            server_header=False,
            proxy_headers=False,
            ssl_certfile=config.tls_cert,
            ssl_keyfile=config.tls_key,
            timeout_graceful_shutdown=_GRACE,
        ),
        started,
    )

    async def stopper(event: asyncio.Event) -> None:
        await event.wait()
        server.should_exit = True

    watcher = asyncio.ensure_future(stopper(stop)) if stop is not None else None
    try:
        await server.serve(sockets=[sock])
    finally:
        if watcher is not None:
            watcher.cancel()
