"""Fleet-store fixtures: one real 3-member etcd cluster per test session, a unique prefix per test,
and etcd-backed sidecars run in-process by `serve()` (their ports chosen up front).

Fault tests start clusters of their own (`dedicated_cluster`): what they kill must not be the
session's. Every wait is bounded (`eventually`); clusters and sidecars are stopped by pid / stop event.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
import pytest
from consent.v1 import admin_pb2, admin_pb2_grpc, decision_pb2, decision_pb2_grpc
from etcd_cluster import EtcdCluster, free_port
from samples import SAMPLE_MAPPING

from consent_sidecar.audit.etcd import EtcdTrail
from consent_sidecar.auth.principals import hash_token
from consent_sidecar.config import ServeConfig
from consent_sidecar.etcd.client import EtcdClient
from consent_sidecar.etcd.keys import Keys
from consent_sidecar.etcd.settings import EtcdSettings
from consent_sidecar.process.server import serve

WAIT = 30.0
OWNER_TOKEN = "owner-token-for-fleet-tests"
MEMBER_TOKEN = "member-token-for-fleet-tests"
OWNER = (("authorization", f"Bearer {OWNER_TOKEN}"),)
MEMBER = (("authorization", f"Bearer {MEMBER_TOKEN}"),)
_T = TypeVar("_T")
_prefixes = itertools.count(1)


@pytest.fixture(scope="session")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """Three real etcd members on loopback for the whole session."""
    cluster = EtcdCluster.start_new(3, tmp_path_factory.mktemp("etcd"), name="session")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def dedicated_cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A 3-member cluster of this test's own, for tests that kill, pause or stop members."""
    cluster = EtcdCluster.start_new(3, tmp_path / "etcd", name="own")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A prefix no other test uses (tests share the session's cluster)."""
    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:10]
    return f"/test/{digest}-{next(_prefixes)}"


def settings(cluster: EtcdCluster, prefix: str) -> EtcdSettings:
    return EtcdSettings(tuple(cluster.endpoints), prefix=prefix)


async def eventually(check: Callable[[], Awaitable[_T]], what: str, timeout: float = WAIT) -> _T:
    """Polls `check` until it returns a truthy value (exceptions count as not yet); bounded."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = await check()
            if value:
                return value
        except (grpc.aio.AioRpcError, AssertionError, OSError) as e:
            last = e
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}" + (f" (last error: {last})" if last else ""))


@dataclass
class FleetSidecar:
    """One etcd-backed sidecar running in this process."""

    config: ServeConfig
    task: asyncio.Task[int]
    stop: asyncio.Event
    stderr: io.StringIO
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.config.listen[0]

    def decision(self) -> decision_pb2_grpc.DecisionServiceStub:
        ch = grpc.aio.insecure_channel(self.address)
        self.channels.append(ch)
        return decision_pb2_grpc.DecisionServiceStub(ch)

    def admin(self) -> admin_pb2_grpc.AdminServiceStub:
        assert self.config.admin_listen is not None
        ch = grpc.aio.insecure_channel(self.config.admin_listen)
        self.channels.append(ch)
        return admin_pb2_grpc.AdminServiceStub(ch)

    async def digest(self) -> str:
        response = await self.decision().Decide(decision_pb2.DecideRequest(destinations=["x"]), timeout=5)
        return str(response.policy.digest)

    async def status(self) -> admin_pb2.PolicyStatus:
        status: admin_pb2.PolicyStatus = await self.admin().GetPolicyStatus(
            admin_pb2.GetPolicyStatusRequest(), metadata=OWNER, timeout=5
        )
        return status

    async def close(self) -> int:
        self.stop.set()
        try:
            code = await asyncio.wait_for(self.task, timeout=WAIT)
        finally:
            for ch in self.channels:
                await ch.close()
        return code


def write_principals(directory: Path) -> Path:
    path = directory / "principals.yaml"
    path.write_text(
        "principals:\n"
        f"  - {{id: alice, role: owner, token_sha256: {hash_token(OWNER_TOKEN)}}}\n"
        f"  - {{id: bob, role: member, token_sha256: {hash_token(MEMBER_TOKEN)}}}\n",
        encoding="utf-8",
    )
    return path


async def start_fleet_sidecar(
    directory: Path, etcd: EtcdSettings, *, admin: bool = True, cache: bool = True, name: str = "s",
    ready_timeout: float = WAIT, wait_ready: bool = True, **config: Any,
) -> FleetSidecar:
    """`serve --etcd-endpoints ...` in this process; returns once it is ready (listening, policy loaded)."""
    directory.mkdir(parents=True, exist_ok=True)
    cfg = ServeConfig(
        mappings=str(directory / f"{name}-cache.yaml") if cache else "",
        listen=(f"127.0.0.1:{free_port()}",),
        admin_listen=f"127.0.0.1:{free_port()}" if admin else None,
        principals=str(write_principals(directory)) if admin else None,
        grace_period=1.0,
        etcd=etcd,
        member_id=name,
        **config,
    )
    ready, stop, err = asyncio.Event(), asyncio.Event(), io.StringIO()
    task = asyncio.create_task(serve(cfg, ready=ready, stop=stop, stderr=err))
    sidecar = FleetSidecar(cfg, task, stop, err)
    if wait_ready:
        done, _ = await asyncio.wait(
            [task, asyncio.ensure_future(ready.wait())], timeout=ready_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done or not ready.is_set():
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, timeout=5)
            raise AssertionError(f"sidecar {name} did not start: {err.getvalue()}")
    return sidecar


@contextlib.asynccontextmanager
async def fleet(directory: Path, etcd: EtcdSettings, n: int, **kw: Any) -> AsyncIterator[list[FleetSidecar]]:
    sidecars = []
    try:
        for i in range(n):
            sidecars.append(await start_fleet_sidecar(directory / f"s{i}", etcd, name=f"s{i}", **kw))
        yield sidecars
    finally:
        for s in sidecars:
            with contextlib.suppress(Exception):
                await s.close()


@contextlib.asynccontextmanager
async def etcd_client(etcd: EtcdSettings) -> AsyncIterator[tuple[EtcdClient, EtcdTrail]]:
    client = EtcdClient(etcd)
    trail = EtcdTrail(client, Keys(etcd.prefix))
    try:
        yield client, trail
    finally:
        trail.close()
        await client.close()


async def push(etcd: EtcdSettings, text: str = SAMPLE_MAPPING, actor: str = "test") -> int:
    """Seeds the prefix as `store push` does; the new revision."""
    from consent_sidecar.store.etcd_writer import push_document

    async with etcd_client(etcd) as (client, trail):
        result = await push_document(client, trail, text, actor)
    return result.revision
