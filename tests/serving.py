"""Every way the tests start a sidecar, beyond the `sidecar` fixtures of tests/conftest.py.

- `serving(directory, ...)`: the whole `serve()` in this process (audit log, writer, watcher,
  both listeners on unix sockets, an owner and a member), yielding a `Served` with stubs and
  polling helpers: the hostile-input tests (store, auth, services).
- `decision_server(tmp_path, mapping, ...)`: only a DecisionService over a mapping file, on a
  loopback port, with the recorder or decision log a test reads back (observe, shadow).
- `serve_process(tmp_path, *flags)`: `python -m consent_sidecar serve` as a child process with
  a mapping in tmp_path (SAMPLE_MAPPING unless one is there already), JSON logs on stderr (read
  by a thread), stopped (SIGCONT for a frozen one, SIGTERM, then SIGKILL) with every worker it
  started: the process, worker and client tests that need signals, workers or a frozen server.

Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
from consent.v1 import admin_pb2, admin_pb2_grpc, decision_pb2, decision_pb2_grpc
from consent_core.limits import Limits
from samples import SAMPLE_MAPPING

from consent_sidecar.auth.principals import hash_token
from consent_sidecar.config import ServeConfig
from consent_sidecar.observe.decision_log import DecisionLog
from consent_sidecar.observe.metrics import Metrics, Recorder
from consent_sidecar.process.server import EXIT_OK, serve
from consent_sidecar.services import decision
from consent_sidecar.store.policy import Listener, PolicyStore

WAIT = 30.0  # upper bound of every wait, in seconds
OWNER = (("authorization", "Bearer alice-token"),)
MEMBER = (("authorization", "Bearer bob-token"),)

BASE = """\
version: 1
categories:
  - id: C0002
    name: Performance Cookies
    destinations: [amplitude, mixpanel]
"""

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]


def principals_yaml(**roles: str) -> str:
    """A principals file: each keyword is a principal id, its value the role; the token is `<id>-token`."""
    lines = ["principals:"]
    for pid, role in roles.items():
        lines.append(f"  - {{id: {pid}, role: {role}, token_sha256: {hash_token(pid + '-token')}}}")
    return "\n".join(lines) + "\n"


def bearer(pid: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {pid}-token"),)


@dataclass
class Served:
    config: ServeConfig
    mapping: Path
    principals: Path
    decision: grpc.aio.Channel
    admin_channel: grpc.aio.Channel
    stderr: io.StringIO = field(default_factory=io.StringIO)

    @property
    def admin(self) -> admin_pb2_grpc.AdminServiceStub:
        return admin_pb2_grpc.AdminServiceStub(self.admin_channel)

    async def known(self) -> list[str]:
        stub = decision_pb2_grpc.DecisionServiceStub(self.decision)
        r = await stub.Decide(decision_pb2.DecideRequest(), timeout=5)
        return [*r.allowed, *r.blocked]

    async def status(self) -> admin_pb2.PolicyStatus:
        return await self.admin.GetPolicyStatus(admin_pb2.GetPolicyStatusRequest(), metadata=OWNER, timeout=5)

    async def events(self, after: int = 0) -> list[admin_pb2.AuditEvent]:
        out: list[admin_pb2.AuditEvent] = []
        token = ""
        while True:
            r = await self.admin.ListAuditEvents(
                admin_pb2.ListAuditEventsRequest(after_sequence=after, page_size=1000, page_token=token),
                metadata=OWNER, timeout=10,
            )  # fmt: skip
            out.extend(r.events)
            token = r.next_page_token
            if not token:
                return out


async def until(what: str, check: Callable[[], Awaitable[T | None]], timeout: float = WAIT) -> T:
    """Polls the async `check()` until it returns something truthy; fails naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)  # polling a bounded condition, not synchronising on time


async def start(config: ServeConfig) -> tuple[asyncio.Task[int], asyncio.Event, io.StringIO]:
    """`serve(config)` as a task, started (ready) or already ended; (task, stop, stderr)."""
    ready, stop, err = asyncio.Event(), asyncio.Event(), io.StringIO()
    task = asyncio.create_task(serve(config, ready=ready, stop=stop, stderr=err))
    waiter = asyncio.ensure_future(ready.wait())
    await asyncio.wait({task, waiter}, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    return task, stop, err


@contextlib.asynccontextmanager
async def serving(
    directory: Path, mapping: str | None = BASE, *, principals: str | None = None, **config: Any
) -> AsyncIterator[Served]:
    """serve() on `directory`/mappings.yaml (written from `mapping` unless None) with alice (owner) and bob (member)."""
    path = directory / "mappings.yaml"
    if mapping is not None:
        path.write_text(mapping, encoding="utf-8")
    principals_path = directory / "principals.yaml"
    principals_path.write_text(principals or principals_yaml(alice="owner", bob="member"), encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="cs-") as sockets:
        cfg = ServeConfig(
            mappings=str(path), listen=(f"unix:{sockets}/d.sock",), admin_listen=f"unix:{sockets}/a.sock",
            principals=str(principals_path), grace_period=config.pop("grace_period", 2.0), **config,
        )  # fmt: skip
        task, stop, err = await start(cfg)
        assert not task.done(), f"serve did not start: {err.getvalue()}"
        decision = grpc.aio.insecure_channel(cfg.listen[0])
        admin = grpc.aio.insecure_channel(cfg.admin_listen or "")
        try:
            yield Served(cfg, path, principals_path, decision, admin, err)
        finally:
            await decision.close()
            await admin.close()
            stop.set()
            assert await asyncio.wait_for(task, WAIT) == EXIT_OK


# -- a DecisionService alone ---------------------------------------------------------------------


@dataclass
class DecisionServer:
    channel: grpc.aio.Channel  # to the DecisionService, on 127.0.0.1
    store: PolicyStore
    recorder: Recorder


@contextlib.asynccontextmanager
async def decision_server(
    tmp_path: Path,
    mapping: str,
    *,
    metrics: Metrics | None = None,
    decision_log: DecisionLog | None = None,
    on_publish: Listener | None = None,
) -> AsyncIterator[DecisionServer]:
    """A DecisionService over tmp_path/mappings.yaml (written from `mapping`), default limits.

    Its decisions are recorded into `metrics` (a fresh Metrics unless given) and, if given,
    `decision_log`; `on_publish(old, new)` is a store listener added before the mapping loads.
    """
    path = tmp_path / "mappings.yaml"
    path.write_text(mapping)
    store = PolicyStore()
    if on_publish is not None:
        store.add_listener(on_publish)
    store.load_initial(str(path))
    recorder = Recorder(metrics if metrics is not None else Metrics())
    server = grpc.aio.server()
    decision.add_to_server(decision.DecisionService(store, Limits(), recorder=recorder, decision_log=decision_log),
                           server)  # fmt: skip
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield DecisionServer(channel, store, recorder)
    finally:
        await channel.close()
        await server.stop(None)


# -- a sidecar process ---------------------------------------------------------------------------


class ServeProcess:
    """A running `serve`: the process, its log lines as parsed JSON, and where it listens once started."""

    def __init__(self, process: subprocess.Popen[str], argv: list[str]) -> None:
        self.process = process
        self.argv = argv
        self.raw: list[str] = []  # stderr as written
        self.lines: list[dict[str, Any]] = []  # each stderr line parsed (a line that is not JSON: {"event": line})
        self.started: dict[str, Any] = {}
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            with self._cond:
                self.raw.append(raw)
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"event": raw.rstrip()}
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_line(self, event: str, timeout: float = 60.0, **fields: Any) -> dict[str, Any]:
        """The first log line with this event (and these field values), waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if line.get("event") == event and all(line.get(k) == v for k, v in fields.items()):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no {event!r} log line; last lines: {self.lines[-10:]}")
                self._cond.wait(min(left, 0.2))

    def wait_started(self, timeout: float = 120.0) -> ServeProcess:
        self.started = self.wait_line("sidecar started", timeout)
        return self

    def stderr_text(self) -> str:
        return "".join(self.raw)

    def flags(self, name: str) -> list[str]:
        """The values of the `name` flags it was started with, in order."""
        return [value for flag, value in zip(self.argv, self.argv[1:], strict=False) if flag == name]

    @property
    def tcp(self) -> str:
        return str(next(a for a in self.started["listen"] if not a.startswith("unix:")))

    @property
    def unix(self) -> str:
        """The first unix socket it was told to listen on."""
        return next(a for a in self.flags("--listen") if a.startswith("unix:"))

    @property
    def metrics_url(self) -> str:
        return f"http://{self.flags('--metrics-listen')[-1]}/metrics"

    @property
    def worker_pids(self) -> list[int]:
        return list(self.started.get("workers", []))


@contextlib.contextmanager
def serve_process(
    tmp_path: Path,
    *flags: str,
    env: dict[str, str] | None = None,
    mapping: str = SAMPLE_MAPPING,
    stdout: Path | None = None,
) -> Iterator[ServeProcess]:
    """`serve --mappings tmp_path/mappings.yaml --audit-db tmp_path/audit.db --log-format json FLAGS`.

    `--listen 127.0.0.1:0` unless FLAGS name a listener; `env` adds variables; `stdout` keeps its
    output in that file (else it is discarded). Leaving the block stops it; the log lines stay readable.
    """
    path = tmp_path / "mappings.yaml"
    if not path.exists():
        path.write_text(mapping)
    argv = [
        sys.executable, "-m", "consent_sidecar", "serve", "--mappings", str(path),
        "--audit-db", str(tmp_path / "audit.db"), "--log-format", "json", *flags,
    ]
    if "--listen" not in flags:
        argv += ["--listen", "127.0.0.1:0"]
    full_env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
    with contextlib.ExitStack() as files:
        out = files.enter_context(stdout.open("wb")) if stdout is not None else subprocess.DEVNULL
        process = subprocess.Popen(
            argv, stderr=subprocess.PIPE, stdout=out, stdin=subprocess.DEVNULL, text=True, env=full_env, cwd=ROOT,
        )
    sidecar = ServeProcess(process, argv)
    try:
        yield sidecar
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)  # a test may have frozen it (SIGSTOP)
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # Every worker it started, replacements included: none may outlive the test.
        pids = set(sidecar.worker_pids)
        pids.update(int(line["pid"]) for line in sidecar.lines if line.get("event") == "worker restarted")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        sidecar._reader.join(10)  # every line it wrote is in `lines` once the block is left
