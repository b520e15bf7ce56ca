"""A change is audited before it is served: admin writes and hand edits, over a real `serve()` and gRPC.

While the audit database is write-locked or refuses appends (a full disk), no `Decide` sees the
change and the generation never moves; an admin write fails and changes nothing, a hand edit
stays pending (the status says why) and is served, audited once, when the trail accepts it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from consent.v1 import admin_pb2
from consent_core import errors
from serving import BASE, OWNER, WAIT, serving, until

from consent_sidecar.audit import AuditLog
from consent_sidecar.process.server import AUDIT_DB_NAME

P = admin_pb2.AuditAction


def create(cid: str, destination: str) -> admin_pb2.CreateCategoryRequest:
    return admin_pb2.CreateCategoryRequest(category=admin_pb2.Category(id=cid, name=f"Name {cid}",
                                                                        destinations=[destination]))  # fmt: skip


def refuse_appends(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every AuditLog.append in this process fails, as on a full disk, until monkeypatch.undo()."""

    def full(self: AuditLog, entries: Any) -> Any:
        raise errors.Unavailable(f"audit log {self.path}: append failed, nothing written: database or disk is full")

    monkeypatch.setattr(AuditLog, "append", full)


async def test_a_create_is_never_served_while_the_audit_database_is_write_locked(tmp_path: Path) -> None:
    async with serving(tmp_path) as sc:
        lock = sqlite3.connect(tmp_path / AUDIT_DB_NAME, isolation_level=None, timeout=WAIT)
        lock.execute("BEGIN IMMEDIATE")  # another writer holds the database: appends wait for it
        try:
            call = asyncio.ensure_future(sc.admin.CreateCategory(create("C9", "new-dest"), metadata=OWNER,
                                                                  timeout=WAIT))  # fmt: skip

            async def written() -> bool:
                return "new-dest" in await asyncio.to_thread(sc.mapping.read_text)

            await until("the edit written to the file, its events waiting for the lock", written)
            for _ in range(25):  # while the append waits, Decide must never see the change
                assert "new-dest" not in await sc.known()
                assert (await sc.status()).policy.generation == 1
                assert not call.done()
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        created = await asyncio.wait_for(call, WAIT)  # the lock released: recorded, then served
        assert created.id == "C9"
        assert "new-dest" in await sc.known()
        assert (await sc.status()).policy.generation == 2
        actions = [e.action for e in await sc.events(after=1)]
        assert actions == [P.AUDIT_ACTION_CATEGORY_CREATED, P.AUDIT_ACTION_MAPPING_CREATED,
                           P.AUDIT_ACTION_POLICY_RELOADED]  # fmt: skip


async def test_writes_the_audit_refuses_fail_and_never_move_the_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(tmp_path) as sc:
        before = sc.mapping.read_bytes()
        refuse_appends(monkeypatch)
        for i in range(30):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await sc.admin.CreateCategory(create(f"C{100 + i}", f"d{i}"), metadata=OWNER, timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "it was not applied" in (info.value.details() or "")
        status = await sc.status()
        assert status.policy.generation == 1  # no change was ever published, not even for a moment
        assert sorted(await sc.known()) == ["amplitude", "mixpanel"]
        assert sc.mapping.read_bytes() == before
        monkeypatch.undo()
        assert [e.sequence for e in await sc.events()] == [1]  # only the start
        await sc.admin.CreateCategory(create("C200", "after"), metadata=OWNER, timeout=10)
        assert (await sc.status()).policy.generation == 2


async def test_a_hand_edit_the_audit_refuses_stays_pending_then_is_served_and_audited_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(tmp_path) as sc:
        refuse_appends(monkeypatch)
        await asyncio.to_thread(sc.mapping.write_text, BASE.replace("mixpanel", "heap"))

        async def pending() -> admin_pb2.PolicyStatus | None:
            s = await sc.status()
            return s if s.last_error else None

        status = await until("the pending edit in the status", pending)
        assert status.last_error == (
            f"{sc.mapping}: the edit is not served: its audit events could not be written (audit log "
            f"{tmp_path / AUDIT_DB_NAME}: append failed, nothing written: database or disk is full); retrying"
        )
        assert status.policy.generation == 1 and status.HasField("last_error_at")
        assert "heap" not in await sc.known()
        retried = await until("a retry", lambda: _failed_reloads_past(sc, status.failed_reloads))
        assert retried.policy.generation == 1
        monkeypatch.undo()  # the disk has room again: the next retry records it, then serves it

        async def served() -> bool:
            return "heap" in await sc.known()

        await until("the edit served", served)
        status = await sc.status()
        assert (status.policy.generation, status.last_error) == (2, "")
        events = [(P.Name(e.action), e.destination) for e in await sc.events(after=1)]
        assert events == [
            ("AUDIT_ACTION_CATEGORY_UPDATED", ""), ("AUDIT_ACTION_MAPPING_CREATED", "heap"),
            ("AUDIT_ACTION_MAPPING_REMOVED", "mixpanel"), ("AUDIT_ACTION_POLICY_RELOADED", ""),
        ]  # fmt: skip


async def _failed_reloads_past(sc: Any, n: int) -> admin_pb2.PolicyStatus | None:
    s: admin_pb2.PolicyStatus = await sc.status()
    return s if s.failed_reloads > n else None
