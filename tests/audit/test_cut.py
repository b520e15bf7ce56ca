"""A trail cut while the sidecar was stopped is found at its next start: it refuses to extend it.

The anchor file beside the database names the newest event; a trail that no longer holds it
(its tail deleted, or the whole database) would otherwise verify and let the start re-record
an owner's change as a hand edit. The operator decides: moving the anchor away accepts it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from consent.v1 import admin_pb2
from serving import OWNER, serving, start

from consent_sidecar.audit import AuditLog, verify
from consent_sidecar.process.server import AUDIT_DB_NAME, EXIT_AUDIT


async def created_then_stopped(tmp_path: Path) -> Path:
    async with serving(tmp_path) as sc:
        await sc.admin.CreateCategory(
            admin_pb2.CreateCategoryRequest(category=admin_pb2.Category(id="C9", name="Owner's", destinations=["o"])),
            metadata=OWNER, timeout=10,
        )  # fmt: skip
    return tmp_path / AUDIT_DB_NAME


async def restart_code(tmp_path: Path) -> tuple[int | None, str]:
    from consent_sidecar.config import ServeConfig

    config = ServeConfig(mappings=str(tmp_path / "mappings.yaml"), listen=(f"unix:{tmp_path}/d2.sock",))
    task, stop, err = await start(config)
    stop.set()
    code = await task
    return code, err.getvalue()


async def test_a_cut_tail_stops_the_next_start(tmp_path: Path) -> None:
    db = await created_then_stopped(tmp_path)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("DROP TRIGGER audit_events_no_delete")
        conn.execute("DELETE FROM audit_events WHERE sequence >= 2")  # the owner's change and its events
    finally:
        conn.close()
    assert not verify(db).ok  # (its published policy names a missing event: found before the anchor)
    code, err = await restart_code(tmp_path)
    assert code == EXIT_AUDIT
    assert "the audit trail was cut: the trail ends at event 1, but the anchor file" in err
    assert "Refusing to extend it" in err and f"move {db}.anchor away" in err


async def test_a_deleted_database_stops_the_next_start(tmp_path: Path) -> None:
    db = await created_then_stopped(tmp_path)
    for name in (db.name, f"{db.name}-wal", f"{db.name}-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    code, err = await restart_code(tmp_path)
    assert code == EXIT_AUDIT
    assert "the audit trail was cut: the trail is empty, but the anchor file" in err


async def test_moving_the_anchor_away_accepts_the_trail_as_it_is(tmp_path: Path) -> None:
    db = await created_then_stopped(tmp_path)
    for name in (db.name, f"{db.name}-wal", f"{db.name}-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    (tmp_path / f"{db.name}.anchor").rename(tmp_path / "old.anchor")
    async with serving(tmp_path, mapping=None) as sc:
        assert [e.sequence for e in await sc.events()] == [1]  # a new trail, started by the operator's choice
    with AuditLog.open(db) as log:
        assert log.head is not None and log.head.sequence == 1
