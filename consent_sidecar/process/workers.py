"""`serve --workers N`: N decision processes sharing the TCP `--listen` ports, supervised by the parent.

The parent (`WorkerPool`) checks that each TCP `--listen` port is free and holds it (a bound, not
listening, SO_REUSEPORT socket; port 0 gets its real port here), then starts N workers
(`python -m consent_sidecar.process.worker`, see there). Each serves DecisionService, health and
reflection on those ports with SO_REUSEPORT, so the kernel spreads connections across them.

Everything a worker needs travels over its stdin, one JSON line per message, never its command
line or environment (one argument is capped at 128 KiB, and `ps` shows every argument to every
local user): first its settings (`start`), then the policy to serve (`policy`: the canonical
mapping of the audited snapshot, with the parent's generation), then every later snapshot the
parent publishes, in order. A worker reports on a control pipe of its own (`ready`,
`published` generation and digest, `alive` about once a second from its event loop, `error`);
its stdout and stderr are the parent's (logs and `--decision-log -` lines go where the parent's
go). A worker serves the parent's generation numbers, so clients spread across workers never see
the generation go backwards, and no worker ever reads a half-written mapping file. A worker
whose stdin closes (the parent died) drains and exits.

Supervision: a worker silent for `--worker-timeout` seconds (stopped, wedged event loop) is
logged, counted (`consent_sidecar_worker_restarts_total{reason="unresponsive"}`), killed with
SIGKILL and replaced by a fresh one serving the current policy; while it is down the parent's
health reports `consent-sidecar/workers` NOT_SERVING (`on_change`). A worker that exits on its
own makes the whole sidecar exit (EXIT_WORKER) after draining the rest: the orchestrator
restarts it whole. The admin API, the audit trail, the mapping watcher, the /metrics endpoint
and `unix:` listeners stay in the parent (SO_REUSEPORT does not spread unix sockets).

SIGTERM: the parent forwards it to every worker; each refuses new calls, finishes those it had
received within the grace period and exits 0 (a worker still there 1.5 s after the grace period
is killed). A second SIGTERM is forwarded as well and cuts the drains short.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from consent_core.errors import StartupError
from consent_core.limits import Limits

from consent_sidecar.config import ServeConfig
from consent_sidecar.observe import logs
from consent_sidecar.observe.metrics import MULTIPROC_ENV, mark_process_dead
from consent_sidecar.process.addresses import parse_address
from consent_sidecar.process.deadline import EXIT_MARGIN
from consent_sidecar.store.policy import PolicyStore, Snapshot

__all__ = ["WORKERS_HEALTH", "WorkerError", "WorkerPool", "policy_message", "reserve_tcp", "start_message"]

_log = logs.get_logger(__name__)

READY_TIMEOUT: Final = 60.0  # seconds a worker may take to import, compile and bind
WORKERS_HEALTH: Final = "consent-sidecar/workers"  # health name: SERVING while every worker is up
WORKER_MODULE: Final = "consent_sidecar.process.worker"


class WorkerError(StartupError):
    """A worker could not start (its message says why: usually a listener)."""


# -- the messages on a worker's stdin -------------------------------------------------------------


def start_message(
    config: ServeConfig, number: int, addresses: Sequence[str], source: str, decision_processes: int, control_fd: int
) -> bytes:
    """A worker's settings: everything of ServeConfig its server and DecisionService read.

    grpc_server.server_options, listeners.decision_services and Observability read them: add a
    field here when they read a new one.
    """
    limits = config.limits
    return _line({
        "op": "start",
        "worker": number,
        "control_fd": control_fd,
        "listen": list(addresses),
        "source": source,
        "limits": {f: getattr(limits, f) for f in Limits.__dataclass_fields__},
        "grace_period": config.grace_period,
        "max_connection_idle": config.max_connection_idle,
        "max_concurrent_streams": config.max_concurrent_streams,
        "heartbeat_interval": heartbeat_interval(config.worker_timeout),
        "log_level": config.log_level,
        "log_format": config.log_format,
        "decision_log": config.decision_log,
        "decision_log_sample": config.decision_log_sample,
        "decision_log_rate": config.decision_log_rate,
        "decision_log_bytes_rate": config.decision_log_bytes_rate,
        "memo_bytes": config.memo_bytes,
        "decision_processes": decision_processes,
    })


def policy_message(snap: Snapshot) -> bytes:
    """One published snapshot: the canonical mapping with the parent's generation, digest and load time."""
    return _line({
        "op": "policy", "generation": snap.generation, "digest": snap.digest,
        "loaded_at": snap.loaded_at.timestamp(), "mapping": snap.index.mapping.to_json_dict(),
    })


def heartbeat_interval(timeout: float) -> float:
    """How often a worker says it is alive: several times within the parent's `--worker-timeout`."""
    return min(1.0, timeout / 4)


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


# -- ports --------------------------------------------------------------------------------------------


def reserve_tcp(target: str) -> tuple[socket.socket, str]:
    """Checks that `host:port` is free and holds it for SO_REUSEPORT listeners; returns (socket, host:port).

    The check binds without SO_REUSEPORT (so a port held by anyone, reuseport or not, is refused
    with the OS's reason); the reservation then binds with it and never listens, so it receives
    no connections. Port 0 becomes a real port. Raises OSError (AddressError, a ValueError, for
    a malformed target). Once the workers listen, another sidecar's check fails; two sidecars
    started on one port within the same second (before either's workers listen) could both pass
    it: the reservation alone is not a listener.
    """
    address = parse_address(target, unix=False)
    probe = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are no conflict
        probe.bind((address.host, address.port))
        port = probe.getsockname()[1]
    finally:
        probe.close()
    held = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind((address.host, port))
    except BaseException:
        held.close()
        raise
    return held, address.bound(port)


# -- the parent's side -----------------------------------------------------------------------------------


@dataclass
class _Worker:
    number: int
    process: asyncio.subprocess.Process
    control: asyncio.StreamReader
    generation: int = 0
    digest: str = ""
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    error: str | None = None
    reader: asyncio.Task[None] | None = None
    last_seen: float = field(default_factory=time.monotonic)  # any report from its event loop
    replaced: bool = False  # killed by the parent (unresponsive): its exit is not a failure


OnChange = Callable[[int, int], Awaitable[None]]
"""Called with (workers serving, workers wanted) whenever a worker goes down or comes back."""

OnRestart = Callable[[str], None]
"""Called with the reason (`unresponsive`) each time a worker is replaced."""


class WorkerPool:
    """N worker processes serving `targets` (TCP host:port) over the parent's policy `store`."""

    def __init__(
        self,
        config: ServeConfig,
        store: PolicyStore,
        targets: Sequence[str],
        n: int,
        *,
        on_change: OnChange | None = None,
        on_restart: OnRestart | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.targets = tuple(targets)
        self.n = n
        self.addresses: tuple[str, ...] = ()  # as bound (real ports), after start
        self.workers: list[_Worker] = []
        self.failed = asyncio.Event()  # a worker exited on its own
        self.on_change = on_change
        self.on_restart = on_restart
        self._stopping = False
        self._stopped = False  # every worker has exited
        self._held: list[socket.socket] = []
        self._changed = asyncio.Event()
        self._decision_processes = 1
        self._supervisor: asyncio.Task[None] | None = None
        self._env = dict(os.environ)
        if config.metrics_listen is None:
            self._env.pop(MULTIPROC_ENV, None)  # no endpoint: workers build no metrics

    @property
    def generations(self) -> dict[int, tuple[int, str]]:
        """worker number -> (generation, digest) it last reported serving."""
        return {w.number: (w.generation, w.digest) for w in self.workers}

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(w.process.pid for w in self.workers)

    def reserve(self) -> None:
        """Checks and holds every TCP port (OSError naming nothing: the caller adds the address); all or none."""
        addresses = []
        try:
            for target in self.targets:
                held, bound = reserve_tcp(target)
                self._held.append(held)
                addresses.append(bound)
        except BaseException:
            for held in self._held:
                held.close()
            self._held.clear()
            raise
        self.addresses = tuple(addresses)

    async def start(self, decision_processes: int) -> None:
        """Starts the workers and waits until each is listening; raises WorkerError (all stopped)."""
        self._decision_processes = decision_processes
        self.store.add_listener(self._push)
        try:
            for number in range(self.n):
                await self._spawn(number)
            async with asyncio.timeout(READY_TIMEOUT):
                for w in self.workers:
                    await self._ready(w)
        except TimeoutError:
            await self.stop(None)
            raise WorkerError(f"workers not ready after {READY_TIMEOUT:g} s") from None
        except BaseException:
            await self.stop(None)
            raise
        finally:
            for held in self._held:  # the workers hold the ports now
                held.close()
            self._held.clear()
        self._supervisor = asyncio.create_task(self._supervise())

    async def _spawn(self, number: int) -> _Worker:
        """Starts worker `number` and hands it its settings and the serving policy (not yet ready)."""
        read_fd, write_fd = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", WORKER_MODULE, stdin=asyncio.subprocess.PIPE, env=self._env, pass_fds=(write_fd,),
            )
        finally:
            os.close(write_fd)  # the worker holds the write end: EOF here when it exits
        w = _Worker(number, process, await _pipe_reader(read_fd))
        # No await from here to the append: a publish in between would reach neither this worker
        # nor the snapshot sent now; after it, `_push` sends every later one.
        snap = self.store.current
        assert process.stdin is not None
        process.stdin.write(start_message(
            self.config, number, self.addresses, snap.source, self._decision_processes, write_fd,
        ))
        process.stdin.write(policy_message(snap))
        self.workers = [x for x in self.workers if x.number != number] + [w]
        self.workers.sort(key=lambda x: x.number)
        w.reader = asyncio.create_task(self._read(w))
        return w

    async def _ready(self, w: _Worker) -> None:
        """Waits until `w` listens; WorkerError when it exits first."""
        await asyncio.wait(
            [asyncio.ensure_future(w.ready.wait()), asyncio.ensure_future(w.process.wait())],
            return_when=asyncio.FIRST_COMPLETED,
        )
        if not w.ready.is_set():
            raise WorkerError(w.error or f"worker {w.number} exited with {w.process.returncode}")

    def _push(self, old: Snapshot | None, new: Snapshot) -> None:
        """A PolicyStore listener: every publish goes to every worker, in publish order."""
        message = policy_message(new)
        for w in self.workers:
            stdin = w.process.stdin
            if stdin is not None and not stdin.is_closing():
                stdin.write(message)

    async def _read(self, w: _Worker) -> None:
        while True:
            line = await w.control.readline()
            if not line:
                break
            w.last_seen = time.monotonic()
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            event = msg.get("event")
            if event in ("ready", "published"):
                w.generation, w.digest = int(msg["generation"]), str(msg["digest"])
                if event == "ready":
                    w.ready.set()
                self._changed.set()
            elif event == "error":
                w.error = str(msg.get("message"))
        code = await w.process.wait()
        if self.config.metrics_listen is not None and (directory := os.environ.get(MULTIPROC_ENV)):
            mark_process_dead(w.process.pid, directory)
        if not self._stopping and not w.replaced and w.ready.is_set():
            _log.error("worker exited unexpectedly", worker=w.number, pid=w.process.pid, exit_code=code)
            self.failed.set()

    # -- supervision ------------------------------------------------------------------------------

    async def _supervise(self) -> None:
        """Replaces every worker that stays silent longer than --worker-timeout."""
        timeout = self.config.worker_timeout
        interval = heartbeat_interval(timeout)
        while not self._stopping:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for w in list(self.workers):
                if not self._stopping and w.ready.is_set() and not w.replaced and now - w.last_seen > timeout:
                    await self._replace(w, now - w.last_seen)

    async def _replace(self, w: _Worker, silent: float) -> None:
        _log.error(
            "worker unresponsive: killing and replacing it", worker=w.number, pid=w.process.pid,
            silent_seconds=round(silent, 1), worker_timeout=self.config.worker_timeout,
        )
        w.replaced = True
        if self.on_restart is not None:
            self.on_restart("unresponsive")
        await self._changed_serving(self.n - 1)
        with contextlib.suppress(ProcessLookupError):
            w.process.kill()  # SIGKILL works on a stopped process too
        await w.process.wait()
        if w.reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await w.reader
        if self._stopping:
            return
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                fresh = await self._spawn(w.number)
                await self._ready(fresh)
        except (TimeoutError, WorkerError) as e:
            _log.error("worker could not be replaced: stopping", worker=w.number, error=str(e) or "timeout")
            self.failed.set()
            return
        _log.info("worker restarted", worker=w.number, pid=fresh.process.pid, previous_pid=w.process.pid,
                  policy_generation=fresh.generation)
        await self._changed_serving(self.n)

    async def _changed_serving(self, serving: int) -> None:
        if self.on_change is not None:
            await self.on_change(serving, self.n)

    async def wait_generation(self, generation: int) -> None:
        """Waits until every worker reports serving at least `generation` (bound it with a timeout)."""
        while not all(w.generation >= generation for w in self.workers):
            self._changed.clear()
            await self._changed.wait()

    def signal(self, sig: int) -> None:
        for w in self.workers:
            if w.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    w.process.send_signal(sig)

    async def stop(self, grace: float | None) -> None:
        """SIGTERM to every worker (they drain for the grace period); a second call cuts it short.

        grace None: the workers get SIGTERM twice (drain cut short). Waits for every worker to
        exit, killing any still there 1.5 s after the grace period (the parent's own exit
        deadline is 2 s after it).
        """
        if self._stopped:
            return
        first = not self._stopping
        self._stopping = True
        if self._supervisor is not None:  # no replacement starts (or stays half started) from here
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        self.signal(signal.SIGTERM)
        if not first or grace is None:
            await asyncio.sleep(0.05)  # let the first SIGTERM be handled: the second one then cuts the drain
            self.signal(signal.SIGTERM)
        deadline = time.monotonic() + (grace or 0.0) + EXIT_MARGIN - 0.5
        for w in self.workers:
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await w.process.wait()
            except TimeoutError:
                _log.error("worker did not stop in time: killed", worker=w.number, pid=w.process.pid)
                with contextlib.suppress(ProcessLookupError):
                    w.process.kill()
                await w.process.wait()
        for w in self.workers:
            if w.process.stdin is not None:
                w.process.stdin.close()
            if w.reader is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await w.reader
        for held in self._held:
            held.close()
        self._held.clear()
        self._stopped = True


async def _pipe_reader(fd: int) -> asyncio.StreamReader:
    """An asyncio stream over the read end of a pipe (taking ownership of `fd`)."""
    reader = asyncio.StreamReader()
    protocol = asyncio.StreamReaderProtocol(reader)
    await asyncio.get_running_loop().connect_read_pipe(lambda: protocol, os.fdopen(fd, "rb"))
    return reader
