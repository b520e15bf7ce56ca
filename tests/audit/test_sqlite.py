"""The SQLite store: appending, logging, durability, append-only storage, published policies, bounded reads.

Paging (the request's checks, tokens, filters) is test_paging.py's."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from consent_core import errors

from consent_sidecar.audit import GENESIS_HASH, AuditAction, AuditError, AuditLog, NewEvent, PublishedPolicy, verify

from .support import M1, M2, Captured, all_records, ev, policy_of, published, raw, tamper

A = AuditAction


# ---------------------------------------------------------------------------- appending


def test_one_batch_shares_one_time_and_batches_never_go_back_in_time(log: AuditLog) -> None:
    a = log.append([ev(), ev(), ev()])
    b = log.append([ev()])
    assert len({r.time for r in a}) == 1
    assert b[0].time > a[0].time


def test_empty_append_is_a_no_op(log: AuditLog) -> None:
    assert log.append([]) == []
    assert log.page() == ([], "")


def test_each_event_is_logged_once_without_category_bodies(log: AuditLog, captured: Captured) -> None:
    records = log.append([ev(A.CATEGORY_CREATED, "alice", category_id="C1", after_json='{"secret":1}')])
    ((event, fields),) = captured.lines
    assert event == "audit"
    assert fields == {
        "sequence": 1,
        "time": records[0].time.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor": "alice",
        "action": "AUDIT_ACTION_CATEGORY_CREATED",
        "category_id": "C1",
        "destination": "",
        "detail": "",
        "prev_hash": GENESIS_HASH,
        "hash": records[0].hash,
    }


def test_a_failing_logger_does_not_undo_an_acknowledged_append(db: Path) -> None:
    class Broken:
        def info(self, event: str, **kw: Any) -> None:
            raise OSError("log pipe closed")

    with AuditLog.open(db, logger=Broken()) as log:
        (r,) = log.append([ev()])
        assert log.page()[0] == [r]


# ---------------------------------------------------------------------------- storage


def test_durability_settings_are_wal_and_synchronous_full(log: AuditLog, db: Path) -> None:
    log.append([ev()])
    conn = raw(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent, seen by any connection
    finally:
        conn.close()
    assert log._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL, on the writer connection


def test_batch_append_is_atomic_when_the_transaction_fails_midway(log: AuditLog, db: Path) -> None:
    log.append([ev()])
    conn = raw(db)
    conn.execute(
        "CREATE TRIGGER inject_failure BEFORE INSERT ON audit_events WHEN NEW.actor = 'boom' "
        "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
    )
    with pytest.raises(errors.Unavailable, match="injected failure"):
        log.append([ev(detail="a"), ev(detail="b"), ev(actor="boom"), ev(detail="d")])
    assert [r.sequence for r in all_records(log)] == [1]
    conn.execute("DROP TRIGGER inject_failure")
    conn.close()
    (r,) = log.append([ev()])
    assert r.sequence == 2
    assert verify(db).ok


def test_update_and_delete_are_refused_by_triggers(log: AuditLog, db: Path) -> None:
    log.append([ev(), ev()])
    conn = raw(db)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only: UPDATE refused"):
            conn.execute("UPDATE audit_events SET detail = 'x' WHERE sequence = 1")
        with pytest.raises(sqlite3.DatabaseError, match="append-only: DELETE refused"):
            conn.execute("DELETE FROM audit_events WHERE sequence = 2")
    finally:
        conn.close()
    assert len(all_records(log)) == 2


def test_reopening_restores_dropped_triggers(db: Path) -> None:
    with AuditLog.open(db) as log:
        log.append([ev()])
    tamper(db)
    AuditLog.open(db).close()
    conn = raw(db)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM audit_events")
    finally:
        conn.close()


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="does not exist"):
        AuditLog.open(tmp_path / "nope" / "audit.db")
    assert not (tmp_path / "nope").exists()


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="is a directory"):
        AuditLog.open(tmp_path)


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, I am not a database, but long enough to look like a header" * 10)
    with pytest.raises(AuditError, match="not a consent-sidecar audit database"):
        AuditLog.open(path)
    assert path.read_text().startswith("hello")


def test_a_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(AuditError, match=r"not a consent-sidecar audit database .*users"):
        AuditLog.open(path)
    with pytest.raises(AuditError, match="not a consent-sidecar audit database"):
        verify(path)


def test_closed_log_refuses_appends_and_reads(log: AuditLog) -> None:
    log.close()
    log.close()  # idempotent
    with pytest.raises(AuditError, match="closed"):
        log.append([ev()])
    with pytest.raises(AuditError, match="closed"):
        log.page()


# ---------------------------------------------------------------------------- published policies


def test_a_published_policy_is_stored_with_its_event_and_is_the_last_one(log: AuditLog, db: Path) -> None:
    assert log.last_published_policy() is None  # empty trail
    log.append([ev(A.CATEGORY_CREATED, category_id="C1"), published(M1)])
    assert log.last_published_policy() == PublishedPolicy(2, *policy_of(M1))
    log.append([ev(A.PERMISSION_DENIED, actor="member"), ev(A.POLICY_RELOAD_FAILED)])
    assert log.last_published_policy() == PublishedPolicy(2, *policy_of(M1))  # only POLICY_RELOADED counts
    log.append([published(M2), ev(A.MAPPING_CREATED), published(M1, " again")])
    assert log.last_published_policy() == PublishedPolicy(7, *policy_of(M1))
    conn = raw(db)
    try:  # content-addressed: M1 stored once though published twice
        assert conn.execute("SELECT count(*) FROM policies").fetchone()[0] == 2
        assert conn.execute("SELECT sequence FROM published ORDER BY sequence").fetchall() == [(2,), (5,), (7,)]
        with pytest.raises(sqlite3.DatabaseError, match="append-only: UPDATE refused"):
            conn.execute("UPDATE policies SET canonical = '{}'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only: DELETE refused"):
            conn.execute("DELETE FROM published")
    finally:
        conn.close()
    assert verify(db).ok and verify(db).count == 7


def test_the_last_policy_reloaded_without_a_policy_means_nothing_is_known(log: AuditLog) -> None:
    log.append([published(M1)])
    log.append([ev(detail="generation 2 digest unknown")])  # e.g. an older binary's start event
    assert log.last_published_policy() is None


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (NewEvent("system", A.CATEGORY_CREATED, detail=f"digest {M1.digest()}", policy=policy_of(M1)),
         r"entries\[1\]\.policy: only a POLICY_RELOADED"),
        (NewEvent("system", A.POLICY_RELOADED, detail=f"digest {M1.digest()}", policy=(M1.digest(), "{}")),
         "does not|not to its digest"),
        (NewEvent("system", A.POLICY_RELOADED, detail="generation 1", policy=policy_of(M1)),
         "detail must name 'digest "),
        (NewEvent("system", A.POLICY_RELOADED, detail="x", policy=("a", 1)),  # type: ignore[arg-type]
         "pair of str"),
    ],
)
def test_a_bad_policy_appends_nothing(log: AuditLog, db: Path, bad: NewEvent, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        log.append([ev(), bad])
    assert all_records(log) == []
    conn = raw(db)
    try:
        assert conn.execute("SELECT count(*) FROM policies").fetchone()[0] == 0
    finally:
        conn.close()


def test_a_failed_transaction_stores_no_policy(log: AuditLog, db: Path) -> None:
    conn = raw(db)
    conn.execute(
        "CREATE TRIGGER inject_failure BEFORE INSERT ON audit_events WHEN NEW.actor = 'boom' "
        "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
    )
    with pytest.raises(errors.Unavailable, match="injected failure"):
        log.append([published(M1), ev(actor="boom")])
    conn.execute("DROP TRIGGER inject_failure")
    try:
        assert conn.execute("SELECT count(*) FROM policies").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM published").fetchone()[0] == 0
    finally:
        conn.close()
    assert log.last_published_policy() is None


def test_a_database_from_before_policies_gains_the_tables_and_verifies(db: Path) -> None:
    with AuditLog.open(db) as log:
        log.append([ev(), ev(A.CATEGORY_CREATED)])
    conn = raw(db)
    try:  # make it look like a trail written before policies were kept
        for t in ("policies", "published"):
            conn.execute(f"DROP TRIGGER {t}_no_update")
            conn.execute(f"DROP TRIGGER {t}_no_delete")
            conn.execute(f"DROP TABLE {t}")
    finally:
        conn.close()
    assert verify(db).ok  # read-only, without the tables
    with AuditLog.open(db) as log:
        assert log.last_published_policy() is None
        log.append([published(M1)])
        assert log.last_published_policy() == PublishedPolicy(3, *policy_of(M1))
    assert verify(db).ok


# ---------------------------------------------------------------------------- bounded reads and private files


def test_a_page_of_large_events_ends_early_within_its_byte_budget(log: AuditLog) -> None:
    from consent_sidecar.audit import MAX_PAGE_BYTES

    big = "x" * 20_000
    log.append([ev(A.CATEGORY_UPDATED, detail=f"{i} {big}") for i in range(300)])  # 6 MB of text
    seen: list[int] = []
    token, pages = "", 0
    while True:
        records, token = log.page(page_size=1000, page_token=token)
        pages += 1
        assert records, "a page always holds at least one event"
        assert sum(len(r.detail) for r in records) <= MAX_PAGE_BYTES  # under the 4 MiB gRPC message limit
        seen.extend(r.sequence for r in records)
        if not token:
            break
    assert seen == list(range(1, 301)) and pages > 1


def test_one_event_larger_than_the_budget_still_gets_a_page_of_its_own(log: AuditLog) -> None:
    from consent_sidecar.audit import MAX_PAGE_BYTES

    log.append([ev(detail="y" * (MAX_PAGE_BYTES + 10)), ev(detail="small")])
    first, token = log.page(page_size=10)
    assert [r.sequence for r in first] == [1] and token
    second, token = log.page(page_size=10, page_token=token)
    assert [r.sequence for r in second] == [2] and token == ""


def test_the_database_and_its_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    import os
    import stat

    db = tmp_path / "audit.db"
    old = os.umask(0)
    try:
        with AuditLog.open(db) as log:
            log.append([ev()])
            files = sorted(p.name for p in tmp_path.iterdir())
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    finally:
        os.umask(old)
    assert files == ["audit.db", "audit.db-shm", "audit.db-wal", "audit.db.anchor"]
    assert modes == dict.fromkeys(files, 0o600)


def test_files_an_older_version_made_readable_are_made_private(tmp_path: Path) -> None:
    import os
    import stat

    db = tmp_path / "audit.db"
    with AuditLog.open(db) as log:
        log.append([ev()])
    for p in tmp_path.iterdir():
        os.chmod(p, 0o644)
    with AuditLog.open(db):
        assert {stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == {0o600}


def test_anchor_temp_files_left_by_a_crash_are_removed_at_open(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    with AuditLog.open(db) as log:
        log.append([ev()])
    left = tmp_path / ".audit.db.anchor.0a1b2c3d.tmp"
    left.write_text("half")
    unrelated = [tmp_path / ".audit.db.anchor.keep", tmp_path / "notes.tmp"]
    for p in unrelated:
        p.write_text("mine")
    with AuditLog.open(db) as log:
        assert log.head is not None and log.head.sequence == 1
    assert not left.exists()
    assert all(p.exists() for p in unrelated)


def test_the_head_is_the_newest_event_and_survives_a_reopen(db: Path) -> None:
    with AuditLog.open(db) as log:
        assert log.head is None
        records = log.append([ev(), ev()])
        assert (log.head.sequence, log.head.hash) == (2, records[-1].hash)  # type: ignore[union-attr]
    with AuditLog.open(db) as log:
        assert (log.head.sequence, log.head.hash) == (2, records[-1].hash)  # type: ignore[union-attr]
