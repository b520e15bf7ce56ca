"""A real `serve()` for the hostile-input tests (store, auth, services): unix sockets, an owner and a member.

`serving(directory, ...)` runs the whole sidecar in-process (audit log, writer, watcher, both
listeners) and yields a `Served` with stubs and polling helpers; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
from consent.v1 import admin_pb2, admin_pb2_grpc, decision_pb2, decision_pb2_grpc

from consent_sidecar.auth.principals import hash_token
from consent_sidecar.config import ServeConfig
from consent_sidecar.process.server import EXIT_OK, serve

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
