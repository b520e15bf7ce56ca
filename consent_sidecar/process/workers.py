"""`serve --workers N`: N decision processes sharing the TCP `--listen` ports, supervised by the parent.

The parent (`WorkerPool`) checks that each TCP `--listen` port is free and holds it (a bound, not
listening, SO_REUSEPORT socket; port 0 gets its real port here), then starts N workers
(`python -m consent_sidecar.process.workers`). Each serves DecisionService, health and reflection on those ports
with SO_REUSEPORT, so the kernel spreads connections across them; its server is built by
`grpc_server`, exactly as the parent's listeners are.

Policy: the parent pushes every snapshot it publishes — the canonical mapping of the audited
policy — to every worker in order over the worker's stdin; the worker compiles it in its own
PolicyStore (its own hot reload, off its event loop) and reports `(generation, digest)` on a
control pipe of its own (its stdout and stderr are the parent's: logs and `--decision-log -`
lines go where the parent's go). Because every worker applies the same publishes in the same order, its generation
equals the parent's: clients spread across workers never see the generation go backwards, and
no worker ever reads a half-written mapping file. A worker whose stdin closes (the parent died)
drains and exits.

The admin API, the audit trail, the mapping watcher and the /metrics endpoint stay in the
parent; workers write their metrics to the parent's multiprocess directory. `unix:` listeners
stay in the parent too (SO_REUSEPORT does not spread unix sockets; one process serves them).

SIGTERM: the parent forwards it to every worker; each stops accepting, drains its in-flight RPCs
for the grace period and exits 0. A second SIGTERM is forwarded as well and cuts the drains
short. A worker that exits on its own makes the whole sidecar exit (EXIT_WORKER) after draining
the rest: the orchestrator restarts it whole rather than it serving at reduced capacity unseen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import structlog
from consent_core.errors import StartupError
from consent_core.limits import Limits
from consent_core.model import ConsentMapping

from consent_sidecar.config import ServeConfig
from consent_sidecar.observe import logs
from consent_sidecar.observe.metrics import MULTIPROC_ENV, mark_process_dead
from consent_sidecar.observe.observability import Observability
from consent_sidecar.process.addresses import parse_address
from consent_sidecar.process.grpc_server import GrpcServer, ListenError
from consent_sidecar.process.listeners import decision_services
from consent_sidecar.store.policy import PolicyStore, Snapshot

__all__ = ["WorkerError", "WorkerPool", "main", "reserve_tcp"]

_log = logs.get_logger(__name__)

READY_TIMEOUT: Final = 60.0  # seconds a worker may take to import, compile and bind


class WorkerError(StartupError):
    """A worker could not start (its message says why: usually a listener)."""


# -- the canonical mapping, there and back ---------------------------------------------------------


def _policy_message(snap: Snapshot) -> bytes:
    return json.dumps({
        "op": "policy", "generation": snap.generation, "digest": snap.digest,
        "mapping": snap.index.mapping.to_json_dict(),
    }, separators=(",", ":")).encode() + b"\n"


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


class WorkerPool:
    """N worker processes serving `targets` (TCP host:port) over the parent's policy `store`."""

    def __init__(self, config: ServeConfig, store: PolicyStore, targets: Sequence[str], n: int) -> None:
        self.config = config
        self.store = store
        self.targets = tuple(targets)
        self.n = n
        self.addresses: tuple[str, ...] = ()  # as bound (real ports), after start
        self.workers: list[_Worker] = []
        self.failed = asyncio.Event()  # a worker exited on its own
        self._stopping = False
        self._held: list[socket.socket] = []
        self._changed = asyncio.Event()

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
        snap = self.store.current
        env = dict(os.environ)
        if self.config.metrics_listen is None:
            env.pop(MULTIPROC_ENV, None)  # no endpoint: workers build no metrics
        for number in range(self.n):
            read_fd, write_fd = os.pipe()
            spec = _worker_spec(self.config, number, self.addresses, snap, decision_processes)
            spec["control_fd"] = write_fd
            try:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "consent_sidecar.process.workers", json.dumps(spec),
                    stdin=asyncio.subprocess.PIPE, env=env, pass_fds=(write_fd,),
                )
            finally:
                os.close(write_fd)  # the worker holds the write end: EOF here when it exits
            w = _Worker(number, process, await _pipe_reader(read_fd))
            w.reader = asyncio.create_task(self._read(w))
            self.workers.append(w)
        self.store.add_listener(self._push)
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                for w in self.workers:
                    await asyncio.wait(
                        [asyncio.ensure_future(w.ready.wait()), asyncio.ensure_future(w.process.wait())],
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if not w.ready.is_set():
                        raise WorkerError(w.error or f"worker {w.number} exited with {w.process.returncode}")
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

    def _push(self, old: Snapshot | None, new: Snapshot) -> None:
        """A PolicyStore listener: every publish goes to every worker, in publish order."""
        message = _policy_message(new)
        for w in self.workers:
            stdin = w.process.stdin
            if stdin is not None and not stdin.is_closing():
                stdin.write(message)

    async def _read(self, w: _Worker) -> None:
        while True:
            line = await w.control.readline()
            if not line:
                break
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
        if not self._stopping and w.ready.is_set():
            _log.error("worker exited unexpectedly", worker=w.number, pid=w.process.pid, exit_code=code)
            self.failed.set()

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
        exit (SIGKILL after the grace period and a margin).
        """
        first = not self._stopping
        self._stopping = True
        self.signal(signal.SIGTERM)
        if not first or grace is None:
            await asyncio.sleep(0.05)
            self.signal(signal.SIGTERM)
        deadline = (grace or 0.0) + 5.0
        for w in self.workers:
            try:
                async with asyncio.timeout(deadline):
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


async def _pipe_reader(fd: int) -> asyncio.StreamReader:
    """An asyncio stream over the read end of a pipe (taking ownership of `fd`)."""
    reader = asyncio.StreamReader()
    protocol = asyncio.StreamReaderProtocol(reader)
    await asyncio.get_running_loop().connect_read_pipe(lambda: protocol, os.fdopen(fd, "rb"))
    return reader


def _worker_spec(
    config: ServeConfig, number: int, addresses: Sequence[str], snap: Snapshot, decision_processes: int
) -> dict[str, Any]:
    # Everything of ServeConfig that a worker's server and DecisionService read (grpc_server.server_options,
    # listeners.decision_services, Observability) travels here: add a field when they read a new one.
    limits = config.limits
    return {
        "worker": number,
        "listen": list(addresses),
        "source": snap.source,
        "generation": snap.generation,
        "digest": snap.digest,
        "mapping": snap.index.mapping.to_json_dict(),
        "limits": {f: getattr(limits, f) for f in Limits.__dataclass_fields__},
        "grace_period": config.grace_period,
        "log_level": config.log_level,
        "log_format": config.log_format,
        "decision_log": config.decision_log,
        "decision_log_sample": config.decision_log_sample,
        "decision_log_rate": config.decision_log_rate,
        "decision_log_bytes_rate": config.decision_log_bytes_rate,
        "memo_bytes": config.memo_bytes,
        "decision_processes": decision_processes,
    }


# -- the worker's side ---------------------------------------------------------------------------------------


_control_fd = 1  # set from the spec: the pipe the parent reads this worker's reports from


def _send(message: dict[str, Any]) -> None:
    os.write(_control_fd, json.dumps(message, separators=(",", ":")).encode() + b"\n")


async def _serve_worker(spec: dict[str, Any]) -> int:
    limits = Limits(**spec["limits"])
    config = ServeConfig(
        mappings=spec["source"], listen=tuple(spec["listen"]), grace_period=spec["grace_period"],
        decision_log=spec["decision_log"], decision_log_sample=spec["decision_log_sample"],
        decision_log_rate=spec["decision_log_rate"], decision_log_bytes_rate=spec["decision_log_bytes_rate"],
        limits=limits, memo_bytes=spec["memo_bytes"],
    )
    store = PolicyStore(memo_bytes=config.memo_bytes)
    index = await asyncio.to_thread(store.compile, ConsentMapping.from_json_dict(spec["mapping"]))
    if index.digest != spec["digest"]:
        _send({"event": "error", "message": "the policy sent by the parent compiles to another digest"})
        return 1
    store.publish(index, source=spec["source"])
    obs = Observability.start(config, store, role="worker", decision_processes=spec["decision_processes"])
    services = decision_services(store, config, recorder=obs.recorder, decision_log=obs.decision_log)
    addresses = [parse_address(target, unix=False) for target in config.listen]
    server = GrpcServer(f"worker {spec['worker']}", addresses, services, config, reuseport=True)
    try:
        server.bind()
    except ListenError as e:
        _send({"event": "error", "message": str(e)})
        await server.stop(None)
        await obs.aclose()
        return 1
    await server.start()

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    force = asyncio.Event()

    def on_sigterm() -> None:
        (force if stop.is_set() else stop).set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_sigterm)
    _send({"event": "ready", "generation": store.current.generation, "digest": store.current.digest,
           "pid": os.getpid()})
    control = asyncio.create_task(_follow_parent(store, stop))
    try:
        await stop.wait()
        await server.enter_graceful_shutdown()
        draining = asyncio.ensure_future(server.stop(config.grace_period))
        forced = asyncio.ensure_future(force.wait())
        await asyncio.wait((draining, forced), return_when=asyncio.FIRST_COMPLETED)
        if not draining.done():
            await server.stop(None)
            await draining
        forced.cancel()
    finally:
        control.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await control
        await obs.aclose()
    return 0


async def _follow_parent(store: PolicyStore, stop: asyncio.Event) -> None:
    """Applies the parent's policy messages in order; EOF (the parent is gone) stops the worker."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 30)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    log = structlog.get_logger("consent_sidecar.process.workers")
    while True:
        line = await reader.readline()
        if not line:
            log.info("parent gone: stopping")
            stop.set()
            return
        try:
            msg = json.loads(line)
            if msg.get("op") != "policy":
                continue
            index = await asyncio.to_thread(store.compile, ConsentMapping.from_json_dict(msg["mapping"]))
        except Exception as e:  # a broken message must not take the serving policy down
            log.error("policy from the parent rejected", error=str(e))
            continue
        snap = store.publish(index)
        current = store.current
        if snap is not None and current.generation != msg["generation"]:
            log.warning("worker generation differs from the parent's",
                        generation=current.generation, parent_generation=msg["generation"])
        _send({"event": "published", "generation": current.generation, "digest": current.digest})


def main(argv: list[str] | None = None) -> int:
    """`python -m consent_sidecar.process.workers SPEC_JSON`: one worker, started by WorkerPool (not for direct use)."""
    global _control_fd
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(args[0])
    _control_fd = int(spec.get("control_fd", 1))
    logs.configure(spec["log_level"], spec["log_format"])
    structlog.contextvars.bind_contextvars(worker=spec["worker"])
    try:
        return asyncio.run(_serve_worker(spec))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
