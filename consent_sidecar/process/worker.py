"""One `--workers` decision process: `python -m consent_sidecar.process.worker`, started by `WorkerPool` only.

Reads everything from its stdin (see `workers` for the messages): its settings, the policy to
serve, then every later policy, each compiled off the event loop and served under the parent's
generation number (`_FollowerStore`). Serves DecisionService, health and reflection on the
shared TCP ports through the one server builder, reports `ready` / `published` / `alive` on
its control pipe (`alive` from the event loop about once a second, so a stopped or wedged loop
goes quiet and the parent replaces the process), and on SIGTERM drains like the parent: new
calls refused, received ones finished within the grace period, the process gone 2 s after it
at the latest (`ExitDeadline`). EOF on stdin (the parent is gone) drains and exits too.
Must never read the mapping file, open the audit log or take anything from its command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from datetime import UTC, datetime
from typing import Any

import structlog
from consent_core.index import Index
from consent_core.index import compile as compile_index
from consent_core.limits import Limits
from consent_core.model import ConsentMapping

from consent_sidecar.config import ServeConfig
from consent_sidecar.observe import logs
from consent_sidecar.observe.observability import Observability
from consent_sidecar.process.addresses import parse_address
from consent_sidecar.process.deadline import EXIT_MARGIN, ExitDeadline
from consent_sidecar.process.grpc_server import GrpcServer, ListenError
from consent_sidecar.process.listeners import decision_services
from consent_sidecar.store.policy import PolicyStore, Snapshot

__all__ = ["main"]

_LINE_LIMIT = 1 << 30  # one policy message is one line: the largest mapping the limits allow fits


class _FollowerStore(PolicyStore):
    """A worker's store: it publishes the parent's snapshots under the parent's generation numbers."""

    def adopt(self, index: Index, generation: int, loaded_at: datetime, source: str) -> Snapshot | None:
        """Makes `index` the serving policy as the parent's `generation`; None when it already is."""
        with self._write_lock:
            old = self._current
            if old is not None and old.digest == index.digest and old.generation == generation:
                return None
            new = Snapshot(index=index, generation=generation, digest=index.digest, loaded_at=loaded_at,
                           source=source)
            self._current = new  # the atomic swap, as in PolicyStore.publish
            for listener in self._listeners:
                listener(old, new)
            return new


class _Control:
    """The worker's reports to the parent: JSON lines on the inherited pipe, never blocking the loop."""

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self._transport = transport

    @classmethod
    async def open(cls, fd: int) -> _Control:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(fd, "wb"))
        return cls(transport)

    def send(self, message: dict[str, Any]) -> None:
        if not self._transport.is_closing():
            self._transport.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    async def aclose(self) -> None:
        self._transport.close()
        await asyncio.sleep(0)  # lets the transport flush what it holds


def _decode(line: bytes, memo_bytes: int) -> tuple[dict[str, Any], Index | None]:
    """A message from the parent, its policy compiled (megabytes of JSON: run it off the event loop)."""
    msg = json.loads(line)
    if msg.get("op") != "policy":
        return msg, None
    return msg, compile_index(ConsentMapping.from_json_dict(msg["mapping"]), memo_bytes=memo_bytes)


async def _serve_worker(stdin: asyncio.StreamReader, spec: dict[str, Any], deadline: ExitDeadline) -> int:
    control = await _Control.open(int(spec["control_fd"]))
    log = structlog.get_logger("consent_sidecar.process.worker")
    config = ServeConfig(
        mappings=spec["source"], listen=tuple(spec["listen"]), grace_period=spec["grace_period"],
        max_connection_idle=spec["max_connection_idle"], max_concurrent_streams=spec["max_concurrent_streams"],
        decision_log=spec["decision_log"], decision_log_sample=spec["decision_log_sample"],
        decision_log_rate=spec["decision_log_rate"], decision_log_bytes_rate=spec["decision_log_bytes_rate"],
        limits=Limits(**spec["limits"]), memo_bytes=spec["memo_bytes"],
    )
    store = _FollowerStore(memo_bytes=config.memo_bytes)
    first, index = await asyncio.to_thread(_decode, await stdin.readline(), config.memo_bytes)
    if index is None or index.digest != first["digest"]:
        control.send({"event": "error", "message": "the parent sent no policy, or one that compiles to another digest"})
        await control.aclose()
        return 1
    store.adopt(index, first["generation"], datetime.fromtimestamp(first["loaded_at"], UTC), spec["source"])
    obs = Observability.start(config, store, role="worker", decision_processes=spec["decision_processes"])
    services = decision_services(store, config, recorder=obs.recorder, decision_log=obs.decision_log)
    addresses = [parse_address(target, unix=False) for target in config.listen]
    server = GrpcServer(f"worker {spec['worker']}", addresses, services, config, reuseport=True)
    try:
        server.bind()
    except ListenError as e:
        control.send({"event": "error", "message": str(e)})
        await server.stop(None)
        await obs.aclose()
        await control.aclose()
        return 1
    await server.start()

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    force = asyncio.Event()

    def on_sigterm() -> None:
        (force if stop.is_set() else stop).set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_sigterm)
    current = store.current
    control.send({"event": "ready", "generation": current.generation, "digest": current.digest, "pid": os.getpid()})
    tasks = [
        asyncio.create_task(_follow_parent(stdin, store, stop, control, spec["source"])),
        asyncio.create_task(_heartbeat(control, float(spec["heartbeat_interval"]))),
    ]
    try:
        await stop.wait()
        deadline.arm()
        log.info("worker shutting down", grace_period=config.grace_period)
        await server.enter_graceful_shutdown()
        draining = asyncio.ensure_future(server.stop(config.grace_period))
        forced = asyncio.ensure_future(force.wait())
        await asyncio.wait((draining, forced), return_when=asyncio.FIRST_COMPLETED)
        if not draining.done():
            await server.stop(None)
            await draining
        forced.cancel()
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await obs.aclose()
        await control.aclose()
    return 0


async def _heartbeat(control: _Control, interval: float) -> None:
    """`alive` from the event loop: silence means this process (or its loop) is stuck."""
    while True:
        control.send({"event": "alive"})
        await asyncio.sleep(interval)


async def _follow_parent(
    stdin: asyncio.StreamReader, store: _FollowerStore, stop: asyncio.Event, control: _Control, source: str,
) -> None:
    """Applies the parent's policy messages in order; EOF (the parent is gone) stops the worker."""
    log = structlog.get_logger("consent_sidecar.process.worker")
    while True:
        line = await stdin.readline()
        if not line:
            stop.set()  # first: not even a log line that cannot be written may keep an orphan alive
            with contextlib.suppress(Exception):  # structlog raises when stderr is a broken pipe
                log.info("parent gone: stopping")
            return
        try:
            msg, index = await asyncio.to_thread(_decode, line, store.memo_bytes)
        except Exception as e:  # a broken message must not take the serving policy down
            log.error("policy from the parent rejected", error=str(e))
            continue
        if index is None:
            continue
        store.adopt(index, msg["generation"], datetime.fromtimestamp(msg["loaded_at"], UTC), source)
        current = store.current
        control.send({"event": "published", "generation": current.generation, "digest": current.digest})


async def _main() -> int:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader(limit=_LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin.buffer)
    spec = json.loads(await stdin.readline())
    if spec.get("op") != "start":
        print("consent_sidecar.process.worker: started by the sidecar only (settings come on stdin)", file=sys.stderr)
        return 2
    logs.configure(spec["log_level"], spec["log_format"])
    structlog.contextvars.bind_contextvars(worker=spec["worker"])
    deadline = ExitDeadline(float(spec["grace_period"]) + EXIT_MARGIN)
    code = await _serve_worker(stdin, spec, deadline)
    deadline.code = code
    return code


def main() -> int:
    """One worker; its settings and policies arrive on stdin from `WorkerPool` (not for direct use)."""
    try:
        return asyncio.run(_main())
    except KeyboardInterrupt:
        return 130
    except ValueError:  # stdin closed or garbled before the settings: nothing was started
        print("consent_sidecar.process.worker: no settings on stdin", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
