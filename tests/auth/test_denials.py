"""A member's refused writes reach the trail bounded: the first at once, a burst as one counted event."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import grpc.aio
import pytest
from consent.v1 import admin_pb2
from serving import MEMBER, WAIT, serving, until

from consent_sidecar.audit import AuditAction, AuditLog, AuditRecord
from consent_sidecar.auth.denials import DenialRecorder
from consent_sidecar.process.server import AUDIT_DB_NAME

A = AuditAction
DENIED = admin_pb2.AUDIT_ACTION_PERMISSION_DENIED


def denied(log: AuditLog) -> list[tuple[str, str]]:
    records, _ = log.page(page_size=1000, action=int(A.PERMISSION_DENIED))
    return [(r.actor, r.detail) for r in records]


async def test_a_burst_of_refused_writes_is_one_event_at_once_and_one_count_at_shutdown(tmp_path: Path) -> None:
    create = admin_pb2.CreateCategoryRequest(category=admin_pb2.Category(id="C9", name="X", destinations=["x"]))
    delete = admin_pb2.DeleteCategoryRequest(category_id="C0002", confirm_name="Performance Cookies")
    async with serving(tmp_path) as sc:

        async def refused(call: object) -> None:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call  # type: ignore[misc]
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED

        await refused(sc.admin.CreateCategory(create, metadata=MEMBER, timeout=WAIT))
        first = [(e.actor, e.detail) for e in await sc.events() if e.action == DENIED]
        assert first == [("bob", "CreateCategory")]  # the first refusal is recorded before it is answered
        for burst in (99, 100, 100):  # at most --max-concurrent-streams (100) in flight on one connection
            await asyncio.gather(*(refused(sc.admin.CreateCategory(create, metadata=MEMBER, timeout=WAIT))
                                   for _ in range(burst)))  # fmt: skip
        await refused(sc.admin.DeleteCategory(delete, metadata=MEMBER, timeout=WAIT))  # another RPC: its own count
        events = [(e.actor, e.detail) for e in await sc.events() if e.action == DENIED]
        assert events == [("bob", "CreateCategory"), ("bob", "DeleteCategory")]  # 300 refusals: not 300 events
    # Shutdown wrote the count still open (the sidecar stopped within the 10 s window).
    with AuditLog.open(tmp_path / AUDIT_DB_NAME) as log:
        assert denied(log) == [
            ("bob", "CreateCategory"),
            ("bob", "DeleteCategory"),
            ("bob", "CreateCategory: refused 299 more times within 10 s of the first refusal"),
        ]


async def test_the_count_is_written_when_its_window_closes_and_the_next_refusal_opens_another(
    tmp_path: Path,
) -> None:
    with AuditLog.open(tmp_path / "audit.db") as log:
        recorder = DenialRecorder(log, window=0.3)
        for _ in range(5):
            await recorder.refused("bob", "UpdateCategory")
        assert denied(log) == [("bob", "UpdateCategory")]

        async def closed() -> list[AuditRecord] | None:
            records, _ = log.page()
            return records if len(records) == 2 else None

        await until("the window's count", closed)
        assert denied(log)[1] == ("bob", "UpdateCategory: refused 4 more times within 0.3 s of the first refusal")
        await recorder.refused("bob", "UpdateCategory")  # after the window: recorded at once again
        assert denied(log)[2] == ("bob", "UpdateCategory")
        await recorder.aclose()  # nothing counted since: nothing more written
        assert len(denied(log)) == 3
