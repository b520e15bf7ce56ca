"""What the client tests share: the real sidecar (in a thread, or on the test's event loop; as a
process, `serving.serve_process`), the examples-like mapping it serves, a request workload and a
fake gRPC error.

Every wait is bounded by WAIT; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import grpc
from consent_client import Request

from consent_sidecar.config import ServeConfig
from consent_sidecar.process.server import serve

MAPPING = """\
version: 1
settings:
  unknown_destinations: allow
categories:
  - id: C0001
    name: Strictly Necessary
    destinations: [snowflake]
  - id: C0002
    name: Performance Cookies
    destinations: [google-analytics-4, amplitude, mixpanel]
  - id: C0003
    name: Functional Cookies
    destinations: [intercom, braze]
  - id: C0004
    name: Targeting Cookies
    destinations: [google-ads, braze, twitter-ads]
  - id: C0005
    name: Social Media Cookies
    destinations: [twitter-ads, facebook-pixel]
  - id: C0006
    name: Experimental Cookies
    shadow: true
    destinations: [amplitude, hotjar]
  - id: C0007
    name: Retired Cookies
    enabled: false
    destinations: [mixpanel, old-pixel]
destinations:
  aws-s3: {enforce: false}
  braze: {resolution: any}
"""


WAIT = 20.0  # upper bound of every wait on a thread, process or event in these tests


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def short_tempdir() -> Iterator[Path]:
    """A short directory for unix sockets (AF_UNIX paths are limited to ~107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="cc-") as d:
        yield Path(d)


class ServerThread:
    """The real sidecar (`consent_sidecar.process.server.serve`) on its own event loop in a background thread."""

    def __init__(self, mappings: Path, listen: Sequence[str]) -> None:
        self.config = ServeConfig(mappings=str(mappings), listen=tuple(listen), grace_period=0.2)
        self.exit_code: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()

    def start(self) -> ServerThread:
        self.exit_code = None
        self._started.clear()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        if not self._started.wait(WAIT):
            raise RuntimeError("the sidecar did not start in time")
        if self.exit_code is not None:
            raise RuntimeError(f"the sidecar exited with {self.exit_code}")
        return self

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        ready, self._stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(serve(self.config, ready=ready, stop=self._stop, stderr=io.StringIO()))
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            self.exit_code = task.result()
        self._started.set()
        code = await task
        waiter.cancel()
        self.exit_code = code

    def stop(self) -> None:
        if self._thread is None:
            return
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(WAIT)
        assert not self._thread.is_alive(), "the sidecar did not stop in time"
        self._thread = None

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.asynccontextmanager
async def serving_here(mappings: Path, listen: Sequence[str]) -> AsyncIterator[None]:
    """The sidecar as a task on the current event loop (for async tests)."""
    ready, stop = asyncio.Event(), asyncio.Event()
    config = ServeConfig(mappings=str(mappings), listen=tuple(listen), grace_period=0.2)
    task = asyncio.create_task(serve(config, ready=ready, stop=stop, stderr=io.StringIO()))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiter}, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
    assert ready.is_set(), f"the sidecar did not start: {task.result() if task.done() else 'timeout'}"
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT)


FULL = {"C0001": True, "C0002": True, "C0003": True, "C0004": True, "C0005": True}


def workload(n: int) -> list[Request]:
    dests = ("amplitude", "google-ads", "braze", "aws-s3", "twitter-ads", "snowflake", "x/eu")
    out = []
    for i in range(n):
        consent = None if i % 7 == 0 else {k: bool((i >> j) & 1) for j, k in enumerate(sorted(FULL))}
        out.append(Request(dests[: 1 + i % len(dests)], consent, explain=i % 5 == 0))
    return out


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details
