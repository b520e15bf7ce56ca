"""AdminService answers stay bounded whatever the trail holds: page bytes, audit size, the trail's head."""

from __future__ import annotations

import asyncio
from pathlib import Path

from consent.v1 import admin_pb2
from serving import MEMBER, OWNER, serving

from consent_sidecar.audit import AuditAction, AuditLog, NewEvent
from consent_sidecar.process.server import AUDIT_DB_NAME


async def test_a_page_of_large_events_fits_one_message_and_paging_gets_them_all(tmp_path: Path) -> None:
    async with serving(tmp_path) as sc:
        big = "x" * 20_000
        events = [NewEvent("alice", AuditAction.CATEGORY_UPDATED, detail=f"{i} {big}") for i in range(300)]
        # A second writer on the sidecar's database: the rows are what counts here.
        with AuditLog.open(tmp_path / AUDIT_DB_NAME) as log:
            await asyncio.to_thread(log.append, events)  # 6 MB of event text, more than one 4 MiB message
        seen: list[int] = []
        token, pages = "", 0
        while True:
            r = await sc.admin.ListAuditEvents(
                admin_pb2.ListAuditEventsRequest(page_size=1000, page_token=token), metadata=MEMBER, timeout=10
            )
            pages += 1
            assert r.ByteSize() < 4 << 20
            seen.extend(e.sequence for e in r.events)
            token = r.next_page_token
            if not token:
                break
        assert seen == list(range(1, 302)) and pages > 1


async def test_a_category_of_4000_destinations_adds_audit_text_linear_in_them(tmp_path: Path) -> None:
    async with serving(tmp_path) as sc:
        category = admin_pb2.Category(id="C9", name="Big", destinations=[f"dest-{i:05d}" for i in range(4000)])
        await sc.admin.CreateCategory(admin_pb2.CreateCategoryRequest(category=category), metadata=OWNER, timeout=60)
        events = await sc.events(after=1)
        mappings = [e for e in events if e.action == admin_pb2.AUDIT_ACTION_MAPPING_CREATED]
        assert len(mappings) == 4000
        assert all(e.category_id == "C9" and e.before_json == e.after_json == "" for e in mappings)
        [created] = [e for e in events if e.action == admin_pb2.AUDIT_ACTION_CATEGORY_CREATED]
        assert '"dest-03999"' in created.after_json  # the category's state: once, on its CATEGORY_* event
        text = sum(len(e.before_json) + len(e.after_json) + len(e.destination) for e in events)
        assert text < 200_000  # it was 4,000 copies of the category: some 400 MB of audit database


async def test_policy_status_names_the_trails_head(tmp_path: Path) -> None:
    async with serving(tmp_path) as sc:
        await sc.admin.CreateCategory(
            admin_pb2.CreateCategoryRequest(category=admin_pb2.Category(id="C9", name="N", destinations=["n"])),
            metadata=OWNER, timeout=10,
        )  # fmt: skip
        status = await sc.status()
        last = (await sc.events())[-1]
        assert (status.audit_head_sequence, status.audit_head_hash) == (last.sequence, last.hash) == (4, last.hash)
        assert len(status.audit_head_hash) == 64
