"""The start of an etcd-backed sidecar (`serve --etcd-endpoints`): first policy, cache, waiting, then serve.

Owns what differs from a file-backed start: the etcd client, trail, source, writer and member
record are built here and handed to the same `server._serve_loaded` as a file's; the first
policy comes from etcd, or from the `--mappings` cache file while etcd cannot be reached;
with neither, the decision listeners answer health NOT_SERVING (and every other call
UNAVAILABLE) while the source keeps retrying, and the sidecar serves from its first load on.
Must never serve a policy the fleet's trail does not account for (the cache excepted: it
was accounted for when written), nor leave etcd tasks running after `serve_fleet` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any, Final, TextIO

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2

from consent_sidecar.audit.etcd import EtcdTrail
from consent_sidecar.auth import gate as auth_gate
from consent_sidecar.config import ServeConfig
from consent_sidecar.etcd.client import EtcdClient, EtcdUnavailable
from consent_sidecar.etcd.keys import Keys
from consent_sidecar.observe import logs
from consent_sidecar.observe.observability import Observability
from consent_sidecar.process import server
from consent_sidecar.process.grpc_server import GrpcServer, listen_address
from consent_sidecar.store.etcd_source import EtcdSource, FleetState
from consent_sidecar.store.etcd_writer import FleetWriter
from consent_sidecar.store.fleet import Fleet, MemberRecord
from consent_sidecar.store.policy import PolicyStore, Snapshot

__all__ = ["FIRST_LOAD_WAIT", "default_member_id", "serve_fleet"]

FIRST_LOAD_WAIT: Final = 5.0  # seconds the start waits for etcd before the cache (or NOT_SERVING) takes over

_log = logs.get_logger(__name__)


def default_member_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


async def serve_fleet(
    config: ServeConfig,
    principals: auth_gate.PrincipalsFile | None,
    ready: asyncio.Event | None,
    stop: asyncio.Event | None,
    err: TextIO,
) -> int:
    settings = config.etcd
    assert settings is not None
    try:
        client = EtcdClient(settings)
    except (OSError, ValueError) as e:
        print(f"error: cannot use --etcd-*: {getattr(e, 'strerror', None) or e}", file=err)
        return server.EXIT_LISTEN
    store = PolicyStore(
        max_mapping_bytes=config.max_mapping_bytes, mapping_limits=config.mapping_limits, memo_bytes=config.memo_bytes
    )
    store.add_listener(server._on_publish)
    trail = EtcdTrail(client, Keys(settings.prefix))
    source = EtcdSource(client, trail, store, cache=config.mappings or None)
    member = MemberRecord(source, config.member_id or default_member_id(), config.listen[0] if config.listen else "")
    source_stop = asyncio.Event()
    tasks = [asyncio.create_task(source.run(source_stop))]
    try:
        snap = await _first_policy(config, source, stop)
        if snap is None:
            return server.EXIT_OK  # stopped while waiting for a first policy
        tasks.append(asyncio.create_task(member.run(source_stop)))

        async def follow(watch_stop: asyncio.Event) -> None:
            await watch_stop.wait()  # the source runs already; it stops with serve_fleet

        rt = server._Runtime(
            config, store, snap, trail, FleetWriter(source), principals, ready, stop,
            follow=follow, fleet=Fleet(source), observe=lambda obs: _observe(obs, source),
        )
        _log.info("policy source: etcd", endpoints=list(settings.endpoints), prefix=settings.prefix,
                  member_id=member.member_id, store_revision=source.state.revision,
                  from_cache=source.state.from_cache)  # fmt: skip
        try:  # the metrics count this run's share of the fleet's trail from here
            audit_after = (await trail.read_head()).sequence
        except EtcdUnavailable:
            audit_after = 0
        return await server._serve_loaded(rt, audit_after)
    finally:
        source_stop.set()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(t, timeout=3.0)
        trail.close()
        await client.close()


async def _first_policy(config: ServeConfig, source: EtcdSource, stop: asyncio.Event | None) -> Snapshot | None:
    """From etcd (waiting up to FIRST_LOAD_WAIT), else the cache while etcd is away, else NOT_SERVING until one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FIRST_LOAD_WAIT
    while not source.loaded.is_set() and loop.time() < deadline:
        if source.state.disconnected_since is not None and not source.state.connected:
            break  # etcd refused us already: no point waiting the whole time
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(source.loaded.wait()), timeout=0.05)
    if not source.loaded.is_set() and not source.state.connected:
        async with source.lock:
            if not source.loaded.is_set():
                await asyncio.to_thread(source.load_cache)
    if source.loaded.is_set():
        return source.store.current
    return await _wait_serving_nothing(config, source, stop)


class _NotYet(grpc.GenericRpcHandler):
    """Every RPC but health and reflection: UNAVAILABLE while no policy has loaded yet."""

    _WHY = "no policy loaded yet: waiting for the fleet store (etcd); retry"

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = str(details.method)
        if method.startswith(("/grpc.health.", "/grpc.reflection.")):
            return None

        async def unary(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            await context.abort(grpc.StatusCode.UNAVAILABLE, self._WHY)
            return b""

        async def stream(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            await context.abort(grpc.StatusCode.UNAVAILABLE, self._WHY)
            return b""

        if method.endswith("Stream") or method.startswith("/consent.v1.AdminService/Watch"):
            return grpc.stream_stream_rpc_method_handler(stream)
        return grpc.unary_unary_rpc_method_handler(unary)


async def _wait_serving_nothing(config: ServeConfig, source: EtcdSource, stop: asyncio.Event | None) -> Snapshot | None:
    """Decision listeners saying NOT_SERVING until the source loads a first policy (or `stop`)."""
    print("consent-sidecar: no policy to serve yet (etcd unreachable and no usable cache file): "
          "health NOT_SERVING until etcd answers", file=sys.stderr)  # fmt: skip
    _log.error("no policy to serve yet: waiting for etcd", cache=config.mappings or None)

    def add_not_yet(s: grpc.aio.Server) -> str:
        s.add_generic_rpc_handlers((_NotYet(),))
        return "consent.v1.DecisionService"

    waiting = GrpcServer("decision", [listen_address(a) for a in config.listen], [add_not_yet], config)
    waiting.bind()
    await waiting.server.start()
    for name in (health.OVERALL_HEALTH, *waiting.service_names):
        await waiting.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    loop = asyncio.get_running_loop()
    stopping = stop if stop is not None else asyncio.Event()
    own = stop is None
    if own:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
    try:
        loaded = asyncio.ensure_future(source.loaded.wait())
        stopped = asyncio.ensure_future(stopping.wait())
        await asyncio.wait((loaded, stopped), return_when=asyncio.FIRST_COMPLETED)
        loaded.cancel()
        stopped.cancel()
    finally:
        if own:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        await waiting.stop(None)
    if not source.loaded.is_set():
        return None
    _log.info("first policy loaded from etcd: serving", store_revision=source.state.revision)
    return source.store.current


def _observe(obs: Observability, source: EtcdSource) -> None:
    """The store's metrics: connected, revision lag, time to apply a revision."""
    metrics = obs.metrics
    if metrics is None:
        return

    def state(st: FleetState) -> None:
        metrics.store_connected.set(1 if st.connected else 0)
        metrics.store_revision_lag.set(max(0, st.latest - st.revision))

    def applied(seconds: float) -> None:
        metrics.store_apply_seconds.observe(seconds)

    source.on_state = state
    source.on_applied = applied
    state(source.state)
    if source.last_apply is not None and not source.state.from_cache:
        applied(source.last_apply)  # the first load, applied before the metrics existed
