"""The /metrics HTTP endpoint: one thread, an event loop of its own, bounded connections, idle ones closed.

prometheus_client's `start_http_server` runs a thread per connection and never closes an idle
one: 500 idle connections to `--metrics-listen` made 500 threads. This endpoint serves every
connection as a coroutine on one event loop in one daemon thread (its own loop: a scrape never
waits for the sidecar's, and the sidecar's never for a scrape). A request must arrive within
`idle_timeout` seconds of the connection opening or of the previous answer (slow or silent
clients are closed), headers are capped at 8 KiB, and at most `max_connections` are open: a new
one beyond that closes the connection idle the longest, so an idle flood cannot lock a
scraper out. Any path answers the registry in the format the `Accept` header asks for (gzip
when accepted), as prometheus_client's own handler does. Never logs, never reads event content.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import threading
from collections import OrderedDict
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

__all__ = ["IDLE_TIMEOUT", "MAX_CONNECTIONS", "MetricsServer", "parse_listen", "serve_metrics"]

IDLE_TIMEOUT: Final = 30.0  # seconds a connection may stay without a (complete) request
MAX_CONNECTIONS: Final = 64  # open at once; one more closes the one idle the longest
_MAX_HEADER: Final = 8192


def parse_listen(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port); raises ValueError naming the address."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"metrics address {address!r}: expected host:port or [ipv6]:port")
    return host.strip("[]"), int(port)


class MetricsServer:
    """The running endpoint: `address` as bound (the real port when 0 was asked); `close` stops it."""

    def __init__(
        self, sock: socket.socket, address: str, registry: CollectorRegistry, idle_timeout: float, max_connections: int
    ) -> None:
        self.address = address
        self.registry = registry
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._idle: OrderedDict[asyncio.StreamWriter, None] = OrderedDict()  # waiting for a request, oldest first
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, sock=sock, limit=_MAX_HEADER)
            )
            started.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="metrics-endpoint", daemon=True)
        self._thread.start()
        started.wait(10)

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._connections)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self.max_connections:
            if not self._idle:  # every one is busy answering: no room
                writer.close()
                return
            oldest, _ = self._idle.popitem(last=False)
            self._connections.discard(oldest)  # its own handler ends when it sees the close
            oldest.close()
        self._connections.add(writer)
        try:
            keep = True
            while keep:
                self._idle[writer] = None
                try:
                    async with asyncio.timeout(self.idle_timeout):
                        head = await reader.readuntil(b"\r\n\r\n")
                except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                finally:
                    self._idle.pop(writer, None)
                keep = await self._answer(head, writer)
        finally:
            self._connections.discard(writer)
            self._idle.pop(writer, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, head: bytes, writer: asyncio.StreamWriter) -> bool:
        """Writes the response to one request; False when the connection is to be closed."""
        lines = head.decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        version = rest.rpartition(" ")[2]
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        extra: list[str] = []
        if method not in ("GET", "HEAD"):
            status, content_type, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
        else:
            encoder, content_type = choose_encoder(headers.get("accept", ""))
            body = encoder(self.registry)
            if gzip_accepted(headers.get("accept-encoding", "")):
                body = gzip.compress(body)
                extra.append("Content-Encoding: gzip")
            status = "200 OK"
        response = [
            f"HTTP/1.1 {status}", f"Content-Type: {content_type}", f"Content-Length: {len(body)}",
            f"Connection: {'keep-alive' if keep else 'close'}", *extra, "", "",
        ]
        writer.write("\r\n".join(response).encode("latin-1") + (b"" if method == "HEAD" else body))
        try:
            async with asyncio.timeout(self.idle_timeout):  # a reader that never reads is cut off too
                await writer.drain()
        except (TimeoutError, ConnectionError):
            return False
        return keep

    def close(self) -> None:
        """Stops listening, closes every connection and the thread (waits up to 5 s)."""
        if self._loop.is_closed():
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._connections):
                writer.close()
            self._loop.stop()

        with contextlib.suppress(RuntimeError):  # the loop already stopped
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        self._thread.join(5)


def serve_metrics(
    address: str,
    registry: CollectorRegistry,
    *,
    idle_timeout: float = IDLE_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
) -> MetricsServer:
    """Serves `registry` in the Prometheus text format on `address` (any path); OSError if it cannot bind."""
    host, port = parse_listen(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family)  # raises here, in the caller, when taken
    shown = f"[{host}]" if ":" in host else host
    return MetricsServer(sock, f"{shown}:{sock.getsockname()[1]}", registry, idle_timeout, max_connections)
