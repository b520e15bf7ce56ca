"""The audit trail: hash chain, durability, append-only storage, verify, paging and live watching."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from consent_core import errors
from consent_core.diff import ChangeKind, diff
from consent_core.model import Category, ConsentMapping

from consent_sidecar.audit import (
    GENESIS_HASH,
    AuditAction,
    AuditError,
    AuditLog,
    AuditRecord,
    NewEvent,
    PublishedPolicy,
    changes_to_events,
    verify,
)
from consent_sidecar.audit.records import action_of

A = AuditAction
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
WAIT = 30.0  # upper bound of every wait in this file (seconds; generous for slow fsync on busy CI)


class Clock:
    """A deterministic clock: each call one millisecond after the previous."""

    def __init__(self) -> None:
        self.now = T0
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            self.now += timedelta(milliseconds=1)
            return self.now


class Captured:
    """A structlog-shaped logger keeping what it was given."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **kw: Any) -> None:
        self.lines.append((event, kw))


def ev(action: AuditAction = A.POLICY_RELOADED, actor: str = "system", **kw: str) -> NewEvent:
    return NewEvent(actor, action, **kw)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "audit.db"


@pytest.fixture
def captured() -> Captured:
    return Captured()


@pytest.fixture
def log(db: Path, captured: Captured) -> Iterator[AuditLog]:
    audit = AuditLog.open(db, clock=Clock(), logger=captured)
    yield audit
    audit.close()


def raw(db: Path) -> sqlite3.Connection:
    """A plain sqlite connection, as a tamperer would use."""
    return sqlite3.connect(db, isolation_level=None)


def tamper(db: Path, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """Run statements with the append-only triggers dropped (what verify exists to catch)."""
    conn = raw(db)
    try:
        conn.execute("DROP TRIGGER audit_events_no_update")
        conn.execute("DROP TRIGGER audit_events_no_delete")
        for sql, params in statements:
            conn.execute(sql, params)
    finally:
        conn.close()


def documented_hash(r: AuditRecord) -> str:
    """The encoding exactly as the audit module's docstring states it, written out independently."""
    obj = {
        "sequence": r.sequence,
        "time": r.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor": r.actor,
        "action": "AUDIT_ACTION_" + r.action.name,
        "category_id": r.category_id,
        "destination": r.destination,
        "before_json": r.before_json,
        "after_json": r.after_json,
        "detail": r.detail,
        "prev_hash": r.prev_hash,
    }
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def all_records(log: AuditLog) -> list[AuditRecord]:
    out: list[AuditRecord] = []
    token = "first"
    while token:
        records, token = log.page(page_size=1000, page_token="" if token == "first" else token)
        out.extend(records)
    return out


# ---------------------------------------------------------------------------- the chain


def test_first_event_chains_from_64_zeros_and_sequences_increase(log: AuditLog) -> None:
    first = log.append([ev(detail="start")])
    more = log.append([ev(A.CATEGORY_CREATED, "alice", category_id="C0001"), ev(A.PERMISSION_DENIED, "bob")])
    records = first + more
    assert [r.sequence for r in records] == [1, 2, 3]
    assert records[0].prev_hash == GENESIS_HASH == "0" * 64
    for prev, cur in itertools.pairwise(records):
        assert cur.prev_hash == prev.hash
    assert all_records(log) == records


def test_hash_is_sha256_of_the_documented_encoding(log: AuditLog) -> None:
    records = log.append(
        [
            ev(A.CATEGORY_UPDATED, "ålice", category_id="C0002", before_json='{"a":"é"}', after_json='{"a":"\\""}'),
            ev(A.POLICY_RELOAD_FAILED, "file:mappings.yaml", detail='mappings.yaml:7:9: categories[1].id: "x" ✗'),
        ]
    )
    for r in records:
        assert r.hash == documented_hash(r)
        assert len(r.hash) == 64 and r.hash == r.hash.lower()
        assert r.hash == hashlib.sha256(r.canonical_bytes()).hexdigest()
    assert records[0].canonical_bytes().startswith(b'{"action":"AUDIT_ACTION_CATEGORY_UPDATED","actor":"\xc3\xa5lice"')


def test_time_comes_from_the_injected_clock_in_utc(db: Path) -> None:
    east = timezone(timedelta(hours=2))
    with AuditLog.open(db, clock=lambda: datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=east)) as log:
        (r,) = log.append([ev()])
    assert r.time == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert r.time.tzinfo is UTC
    assert b'"time":"2024-05-01T12:00:00.123456Z"' in r.canonical_bytes()


def test_naive_clock_is_refused_and_nothing_is_written(db: Path) -> None:
    with AuditLog.open(db, clock=lambda: datetime(2024, 5, 1)) as log:
        with pytest.raises(ValueError, match="timezone-aware"):
            log.append([ev()])
        assert log.page() == ([], "")


def test_one_batch_shares_one_time_and_batches_never_go_back_in_time(log: AuditLog) -> None:
    a = log.append([ev(), ev(), ev()])
    b = log.append([ev()])
    assert len({r.time for r in a}) == 1
    assert b[0].time > a[0].time


def test_reopening_continues_the_chain(db: Path) -> None:
    with AuditLog.open(db) as log:
        before = log.append([ev(), ev()])
    with AuditLog.open(db) as log:
        (after,) = log.append([ev()])
    assert after.sequence == 3 and after.prev_hash == before[-1].hash
    assert verify(db).ok


def test_empty_append_is_a_no_op(log: AuditLog) -> None:
    assert log.append([]) == []
    assert log.page() == ([], "")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (NewEvent("system", A.UNSPECIFIED), r"entries\[1\]\.action"),
        (NewEvent("system", 99), r"entries\[1\]\.action"),  # type: ignore[arg-type]
        (NewEvent("", A.POLICY_RELOADED), r"entries\[1\]\.actor: must not be empty"),
        (NewEvent("system", A.POLICY_RELOADED, detail="\ud800"), r"entries\[1\]\.detail: not encodable"),
    ],
)
def test_an_unrecordable_entry_appends_nothing(log: AuditLog, bad: NewEvent, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        log.append([ev(), bad, ev()])
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


def test_changes_to_events_writes_canonical_before_and_after() -> None:
    old = ConsentMapping(categories=(Category("C0002", "Perf", ("b", "a")),))
    new = ConsentMapping(categories=(Category("C0002", "Performance", ("b", "a")),))
    (event,) = changes_to_events(diff(old, new), "file:mappings.yaml")
    assert event == NewEvent(
        actor="file:mappings.yaml",
        action=A.CATEGORY_UPDATED,
        category_id="C0002",
        destination="",
        before_json='{"destinations":["b","a"],"enabled":true,"id":"C0002","name":"Perf","shadow":false}',
        after_json='{"destinations":["b","a"],"enabled":true,"id":"C0002","name":"Performance","shadow":false}',
    )
    created = changes_to_events(diff(ConsentMapping(), old), "alice")
    assert [(e.action, e.destination, e.before_json) for e in created] == [
        (A.CATEGORY_CREATED, "", ""),
        (A.MAPPING_CREATED, "b", ""),
        (A.MAPPING_CREATED, "a", ""),
    ]


def test_every_change_kind_is_recorded_as_the_action_of_the_same_name() -> None:
    for kind in ChangeKind:
        assert action_of(kind) is AuditAction[kind.name]


def test_audit_action_values_match_consent_v1() -> None:
    from consent.v1 import admin_pb2

    for action in AuditAction:
        assert admin_pb2.AuditAction.Value(action.proto_name) == action.value
    assert len(AuditAction) == len(admin_pb2.AuditAction.keys())


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


# ---------------------------------------------------------------------------- verify


def fill(db: Path, n: int = 6) -> list[AuditRecord]:
    with AuditLog.open(db, clock=Clock()) as log:
        return log.append([ev(A.CATEGORY_CREATED, "alice", category_id=f"C{i}", detail=f"#{i}") for i in range(n)])


def test_verify_ok_counts_events(db: Path) -> None:
    records = fill(db)
    result = verify(db)
    assert result.ok and result.count == 6 and result.broken_sequence is None
    assert result.last_hash == records[-1].hash
    assert "ok: 6 events" in str(result)


def test_verify_an_empty_log_is_ok(db: Path) -> None:
    AuditLog.open(db).close()
    result = verify(db)
    assert result.ok and result.count == 0


def test_verify_while_the_log_is_open_and_in_use(log: AuditLog, db: Path) -> None:
    log.append([ev(), ev()])
    assert verify(db).count == 2
    log.append([ev()])
    assert verify(db).count == 3


def test_verify_a_missing_file_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="no such audit database"):
        verify(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()


def test_verify_detects_an_altered_field(db: Path) -> None:
    fill(db)
    tamper(db, ("UPDATE audit_events SET detail = 'nothing to see' WHERE sequence = 4", ()))
    result = verify(db)
    assert (result.ok, result.broken_sequence, result.kind, result.count) == (False, 4, "altered", 3)
    assert "altered" in result.reason
    assert str(result).startswith("broken at sequence 4:")


def test_verify_detects_an_altered_actor_on_the_first_event(db: Path) -> None:
    fill(db)
    tamper(db, ("UPDATE audit_events SET actor = 'mallory' WHERE sequence = 1", ()))
    assert (verify(db).broken_sequence, verify(db).kind) == (1, "altered")


def test_verify_detects_a_removed_row(db: Path) -> None:
    fill(db)
    tamper(db, ("DELETE FROM audit_events WHERE sequence = 3", ()))
    result = verify(db)
    assert (result.broken_sequence, result.kind) == (3, "removed")
    assert "event 3 is missing (next is 4)" in result.reason


def test_verify_detects_removal_of_the_first_row(db: Path) -> None:
    fill(db)
    tamper(db, ("DELETE FROM audit_events WHERE sequence = 1", ()))
    assert (verify(db).broken_sequence, verify(db).kind) == (1, "removed")


def test_verify_detects_two_rows_with_swapped_contents(db: Path) -> None:
    fill(db)
    cols = "time, actor, action, category_id, destination, before_json, after_json, detail, prev_hash, hash"
    tamper(
        db,
        ("CREATE TEMP TABLE keep AS SELECT * FROM audit_events WHERE sequence IN (2, 5)", ()),
        *(
            (
                f"UPDATE audit_events SET ({cols}) = (SELECT {cols} FROM keep WHERE sequence = ?) WHERE sequence = ?",
                (src, dst),
            )
            for src, dst in ((5, 2), (2, 5))
        ),
    )
    result = verify(db)
    assert (result.broken_sequence, result.kind) == (2, "reordered")
    assert "holds the contents of event 5" in result.reason


def test_verify_detects_a_bad_first_prev_hash_even_with_a_consistent_hash(db: Path) -> None:
    records = fill(db)
    forged = AuditRecord(**{**_fields(records[0]), "prev_hash": "f" * 64, "hash": ""})
    tamper(
        db,
        ("UPDATE audit_events SET prev_hash = ?, hash = ? WHERE sequence = 1", ("f" * 64, documented_hash(forged))),
    )
    result = verify(db)
    assert (result.broken_sequence, result.kind) == (1, "bad_first_prev_hash")


def test_verify_detects_a_rewritten_event_whose_own_hash_was_recomputed(db: Path) -> None:
    records = fill(db)
    forged = AuditRecord(**{**_fields(records[2]), "detail": "rewritten", "hash": ""})
    tamper(
        db,
        ("UPDATE audit_events SET detail = 'rewritten', hash = ? WHERE sequence = 3", (documented_hash(forged),)),
    )
    result = verify(db)
    assert (result.broken_sequence, result.kind) == (4, "relinked")
    assert "event 3 was rewritten" in result.reason


def test_verify_reports_an_unreadable_action(db: Path) -> None:
    fill(db)
    tamper(db, ("UPDATE audit_events SET action = 42 WHERE sequence = 2", ()))
    assert (verify(db).broken_sequence, verify(db).kind) == (2, "unreadable")


def test_cutting_off_the_newest_events_changes_the_last_hash(db: Path) -> None:
    # The chain alone cannot see a truncated tail; the last hash (also in each log line) can.
    records = fill(db)
    tamper(db, ("DELETE FROM audit_events WHERE sequence = 6", ()))
    result = verify(db)
    assert result.ok and result.count == 5
    assert result.last_hash == records[4].hash != records[5].hash


def _fields(r: AuditRecord) -> dict[str, Any]:
    return {name: getattr(r, name) for name in AuditRecord.__slots__}


# ---------------------------------------------------------------------------- paging


@pytest.fixture
def mixed(log: AuditLog) -> list[AuditRecord]:
    """250 events over three categories and three actions."""
    events = []
    for i in range(250):
        action = (A.CATEGORY_UPDATED, A.MAPPING_CREATED, A.POLICY_RELOADED)[i % 3]
        events.append(ev(action, "alice", category_id=("C1", "C2", "C3", "")[i % 4]))
    return log.append(events)


def walk(log: AuditLog, page_size: int, **filters: Any) -> tuple[list[int], list[int]]:
    """Every page's sequences (flattened) and the page lengths."""
    seqs: list[int] = []
    sizes: list[int] = []
    records, token = log.page(page_size=page_size, **filters)
    while True:
        seqs.extend(r.sequence for r in records)
        sizes.append(len(records))
        if not token:
            return seqs, sizes
        records, token = log.page(page_size=page_size, page_token=token, **filters)


def test_page_size_zero_means_100(log: AuditLog, mixed: list[AuditRecord]) -> None:
    records, token = log.page()
    assert [r.sequence for r in records] == list(range(1, 101))
    assert token
    assert records == mixed[:100]


@pytest.mark.parametrize(("page_size", "sizes"), [(1000, [250]), (7, [7] * 35 + [5]), (50, [50] * 5), (1, [1] * 250)])
def test_walking_pages_yields_every_event_once(
    log: AuditLog, mixed: list[AuditRecord], page_size: int, sizes: list[int]
) -> None:
    seqs, got_sizes = walk(log, page_size)
    assert seqs == list(range(1, 251))
    assert got_sizes == sizes  # a full last page already ends with "": no empty page to fetch


def test_page_size_over_1000_names_page_size(log: AuditLog) -> None:
    with pytest.raises(errors.InvalidArgument, match="page_size: must be at most 1000") as info:
        log.page(page_size=1001)
    assert info.value.field == "page_size"
    with pytest.raises(errors.InvalidArgument, match="page_size"):
        log.page(page_size=-1)


def test_filter_by_category(log: AuditLog, mixed: list[AuditRecord]) -> None:
    seqs, _ = walk(log, 9, category_id="C2")
    assert seqs == [r.sequence for r in mixed if r.category_id == "C2"]
    assert len(seqs) == 63


def test_filter_by_action(log: AuditLog, mixed: list[AuditRecord]) -> None:
    seqs, _ = walk(log, 10, action=A.MAPPING_CREATED)
    assert seqs == [r.sequence for r in mixed if r.action is A.MAPPING_CREATED]
    seqs_int, _ = walk(log, 10, action=6)  # the wire sends a plain int
    assert seqs_int == seqs


def test_filters_combine(log: AuditLog, mixed: list[AuditRecord]) -> None:
    seqs, _ = walk(log, 4, category_id="C1", action=A.POLICY_RELOADED, after_sequence=100)
    assert seqs == [
        r.sequence for r in mixed if r.category_id == "C1" and r.action is A.POLICY_RELOADED and r.sequence > 100
    ]
    assert seqs


def test_after_sequence(log: AuditLog, mixed: list[AuditRecord]) -> None:
    seqs, _ = walk(log, 30, after_sequence=200)
    assert seqs == list(range(201, 251))
    assert log.page(after_sequence=250) == ([], "")
    assert log.page(after_sequence=10_000) == ([], "")


def test_no_match_is_an_empty_last_page(log: AuditLog, mixed: list[AuditRecord]) -> None:
    assert log.page(category_id="C404") == ([], "")
    assert log.page(action=A.PERMISSION_DENIED) == ([], "")


def test_unknown_action_filter_names_action(log: AuditLog) -> None:
    with pytest.raises(errors.InvalidArgument, match="action: unknown AuditAction value 99"):
        log.page(action=99)


def test_negative_after_sequence_is_invalid(log: AuditLog) -> None:
    with pytest.raises(errors.InvalidArgument, match="after_sequence"):
        log.page(after_sequence=-1)


def test_page_token_is_opaque_urlsafe_text(log: AuditLog, mixed: list[AuditRecord]) -> None:
    _, token = log.page(page_size=10, category_id="C1")
    assert token and set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.mark.parametrize(
    "filters",
    [{"category_id": "C2"}, {"action": A.CATEGORY_UPDATED}, {"after_sequence": 5}, {"category_id": ""}],
)
def test_a_token_used_with_other_filters_names_page_token(
    log: AuditLog, mixed: list[AuditRecord], filters: dict[str, Any]
) -> None:
    _, token = log.page(page_size=10, category_id="C1")
    if filters == {"category_id": ""}:
        filters = {}
    with pytest.raises(errors.InvalidArgument, match="page_token: was issued for other filters") as info:
        log.page(page_size=10, page_token=token, **filters)
    assert info.value.field == "page_token"


def test_page_size_may_change_between_pages(log: AuditLog, mixed: list[AuditRecord]) -> None:
    first, token = log.page(page_size=10)
    second, _ = log.page(page_size=25, page_token=token)
    assert [r.sequence for r in first + second] == list(range(1, 36))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "garbage!",
        "abc",
        "====",
        _b64(b"not json"),
        _b64(b"\xff\xfe"),
        _b64(b"[1, 2]"),
        _b64(b'{"v": 2, "last": 3, "f": "x"}'),
        _b64(b'{"v": 1, "last": "3", "f": "x"}'),
        _b64(b'{"v": 1, "last": -3, "f": "x"}'),
        _b64(b'{"v": 1, "last": true, "f": "x"}'),
        _b64(b'{"v": 1, "last": 3}'),
    ],
)
def test_garbage_tokens_name_page_token(log: AuditLog, token: str) -> None:
    with pytest.raises(errors.InvalidArgument, match="page_token") as info:
        log.page(page_token=token)
    assert info.value.field == "page_token"


def test_paging_neither_loses_nor_repeats_events_while_another_thread_appends(log: AuditLog) -> None:
    log.append([ev(category_id="C1") for _ in range(50)])
    total = 50 + 150 * 4
    done = threading.Event()
    failures: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(150):
                log.append([ev(category_id="C1") for _ in range(4)])
        except BaseException as exc:  # surfaced by the assertion below
            failures.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    seen: list[int] = []
    try:
        # Page with tokens; when a walk ends ("" token), resume with after_sequence = the last seen.
        deadline = time.monotonic() + WAIT
        while True:
            assert time.monotonic() < deadline, "writer did not finish in time"
            finished = done.is_set()  # read before the walk: if set, the walk sees every event
            after = seen[-1] if seen else 0
            records, token = log.page(page_size=7, category_id="C1", after_sequence=after)
            seen.extend(r.sequence for r in records)
            while token:
                records, token = log.page(page_size=7, page_token=token, category_id="C1", after_sequence=after)
                seen.extend(r.sequence for r in records)
            if finished:
                break
    finally:
        thread.join(WAIT)
    assert not failures
    assert seen == list(range(1, total + 1))


# ---------------------------------------------------------------------------- watching


async def take(it: AsyncIterator[AuditRecord], n: int) -> list[int]:
    """The next n sequences from a watcher, bounded by WAIT."""

    async def go() -> list[int]:
        out: list[int] = []
        while len(out) < n:
            out.append((await anext(it)).sequence)
        return out

    return await asyncio.wait_for(go(), WAIT)


def append_in_thread(log: AuditLog, batches: int, per_batch: int) -> threading.Thread:
    def run() -> None:
        for i in range(batches):
            log.append([ev(detail=f"live {i}.{j}") for j in range(per_batch)])

    thread = threading.Thread(target=run)
    thread.start()
    return thread


async def test_backlog_then_live_without_gap_or_duplicate_at_the_seam(log: AuditLog) -> None:
    log.append([ev() for _ in range(1200)])  # more than two backlog chunks
    writer = append_in_thread(log, 100, 6)  # appends race with the backlog read and the switch to live
    watcher = log.watch(0)
    try:
        got = await take(watcher, 1800)
        assert got == list(range(1, 1801))
    finally:
        await watcher.aclose()
        await asyncio.to_thread(writer.join, WAIT)


async def test_watching_from_a_sequence_starts_after_it(log: AuditLog) -> None:
    log.append([ev() for _ in range(10)])
    watcher = log.watch(7)
    try:
        assert await take(watcher, 3) == [8, 9, 10]
        await asyncio.to_thread(log.append, [ev(), ev()])
        assert await take(watcher, 2) == [11, 12]
    finally:
        await watcher.aclose()


async def test_watching_an_empty_log_gets_only_live_events(log: AuditLog) -> None:
    live = asyncio.Event()
    watcher = log.watch(0, on_live=live.set)
    first = asyncio.ensure_future(anext(watcher))
    try:
        await asyncio.wait_for(live.wait(), WAIT)
        await asyncio.to_thread(log.append, [ev(detail="hello")])
        record = await asyncio.wait_for(first, WAIT)
        assert (record.sequence, record.detail) == (1, "hello")
    finally:
        await watcher.aclose()


async def test_several_watchers_each_get_their_exact_range(log: AuditLog) -> None:
    log.append([ev() for _ in range(600)])
    starts = [0, 1, 300, 599, 600, 650]
    watchers = [log.watch(s) for s in starts]
    writer = append_in_thread(log, 50, 6)  # up to 900
    try:
        results = await asyncio.gather(*(take(w, 900 - s) for w, s in zip(watchers, starts, strict=True)))
        for s, got in zip(starts, results, strict=True):
            assert got == list(range(s + 1, 901))
        assert log.watchers == len(starts)
    finally:
        for w in watchers:
            await w.aclose()
        await asyncio.to_thread(writer.join, WAIT)
    assert log.watchers == 0


async def test_a_slow_watcher_is_cut_off_while_a_fast_one_continues(log: AuditLog) -> None:
    slow_live, fast_live = asyncio.Event(), asyncio.Event()
    slow = log.watch(0, buffer=2, on_live=slow_live.set)
    fast = log.watch(0, on_live=fast_live.set)
    slow_next = asyncio.ensure_future(anext(slow))
    fast_first = asyncio.ensure_future(take(fast, 10))
    try:
        await asyncio.wait_for(asyncio.gather(slow_live.wait(), fast_live.wait()), WAIT)
        # The slow consumer reads nothing more while 10 events arrive: more than its buffer of 2.
        await asyncio.to_thread(log.append, [ev() for _ in range(10)])
        assert await asyncio.wait_for(fast_first, WAIT) == list(range(1, 11))

        async def drain() -> list[int]:
            out = [(await slow_next).sequence]
            async for r in slow:
                out.append(r.sequence)
            return out

        with pytest.raises(errors.ResourceExhausted, match=r"more than 2 events waiting; .*after_sequence=\d+"):
            await asyncio.wait_for(drain(), WAIT)
        # The appender was never blocked and the fast watcher keeps going.
        await asyncio.to_thread(log.append, [ev() for _ in range(5)])
        assert await take(fast, 5) == list(range(11, 16))
        assert log.watchers == 1
    finally:
        slow_next.cancel()
        await fast.aclose()
        await slow.aclose()


async def test_the_cut_off_message_lets_the_slow_watcher_resume_without_loss(log: AuditLog) -> None:
    live = asyncio.Event()
    slow = log.watch(0, buffer=1, on_live=live.set)
    first = asyncio.ensure_future(anext(slow))
    await asyncio.wait_for(live.wait(), WAIT)
    await asyncio.to_thread(log.append, [ev() for _ in range(5)])
    seen: list[int] = []
    try:
        seen.append((await asyncio.wait_for(first, WAIT)).sequence)
        while True:
            seen.append((await asyncio.wait_for(anext(slow), WAIT)).sequence)
    except errors.ResourceExhausted as exc:
        resume = int(str(exc).rsplit("after_sequence=", 1)[1].split()[0])
    except StopAsyncIteration:
        pytest.fail("watcher ended instead of being cut off")
    assert resume == (seen[-1] if seen else 0)
    again = log.watch(resume)
    try:
        assert seen + await take(again, 5 - len(seen)) == [1, 2, 3, 4, 5]
    finally:
        await again.aclose()


async def test_close_ends_every_watcher_cleanly(log: AuditLog) -> None:
    log.append([ev(), ev()])
    live = [asyncio.Event(), asyncio.Event()]
    watchers = [log.watch(0, on_live=live[0].set), log.watch(2, on_live=live[1].set)]
    assert await take(watchers[0], 2) == [1, 2]
    pending = [asyncio.ensure_future(anext(w)) for w in watchers]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in live)), WAIT)
    await asyncio.to_thread(log.close)  # from another thread, as a server's shutdown may
    for task in pending:
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(task, WAIT)
    assert log.watchers == 0
    late = log.watch(0)
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(late), WAIT)


async def test_close_during_backlog_ends_the_watcher(log: AuditLog) -> None:
    log.append([ev() for _ in range(1000)])
    watcher = log.watch(0)
    assert await take(watcher, 1) == [1]
    await asyncio.to_thread(log.close)

    async def rest() -> int:
        return len([r async for r in watcher])

    assert await asyncio.wait_for(rest(), WAIT) < 1000


async def test_a_watcher_left_early_is_deregistered(log: AuditLog) -> None:
    log.append([ev(), ev()])
    watcher = log.watch(0)
    assert await take(watcher, 1) == [1]
    assert log.watchers == 1
    await watcher.aclose()
    assert log.watchers == 0
    log.append([ev()])  # nothing to deliver to, nothing breaks


async def test_watch_rejects_a_negative_sequence(log: AuditLog) -> None:
    with pytest.raises(errors.InvalidArgument, match="after_sequence"):
        await anext(log.watch(-1))


def test_a_watcher_on_another_threads_loop_receives_appends(log: AuditLog) -> None:
    log.append([ev()])
    result: list[int] = []

    async def watch_elsewhere() -> None:
        watcher = log.watch(0)
        try:
            result.extend(await take(watcher, 4))
        finally:
            await watcher.aclose()

    thread = threading.Thread(target=lambda: asyncio.run(watch_elsewhere()))
    thread.start()
    for _ in range(3):
        log.append([ev()])
    thread.join(WAIT)
    assert not thread.is_alive()
    assert result == [1, 2, 3, 4]


# ---------------------------------------------------------------------------- published policies


def policy_of(mapping: ConsentMapping) -> tuple[str, str]:
    return mapping.digest(), mapping.canonical_bytes().decode("utf-8")


M1 = ConsentMapping(categories=(Category("C1", "Ads", ("braze",)),))
M2 = ConsentMapping(categories=(Category("C1", "Ads", ("braze", "heap")),))


def published(mapping: ConsentMapping, detail: str = "") -> NewEvent:
    return ev(detail=f"generation 1 digest {mapping.digest()}{detail}", policy=policy_of(mapping))  # type: ignore[arg-type]


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


def test_the_policy_is_not_part_of_the_hash_nor_of_the_record(log: AuditLog) -> None:
    [with_policy] = log.append([published(M1)])
    assert with_policy.hash == documented_hash(with_policy)
    assert "canonical" not in repr(published(M1))  # a whole mapping is never logged or printed


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


def tamper_policies(db: Path, *statements: str) -> None:
    conn = raw(db)
    try:
        for t in ("policies", "published"):
            conn.execute(f"DROP TRIGGER {t}_no_update")
            conn.execute(f"DROP TRIGGER {t}_no_delete")
        for sql in statements:
            conn.execute(sql)
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("statement", "reason"),
    [
        pytest.param("UPDATE policies SET canonical = replace(canonical, 'heap', 'hea')",
                     "does not hash to its digest: it was altered", id="altered-policy"),
        pytest.param("DELETE FROM policies WHERE canonical LIKE '%heap%'", "is not stored", id="removed-policy"),
        pytest.param("UPDATE published SET digest = (SELECT digest FROM policies WHERE canonical NOT LIKE '%heap%') "
                     "WHERE sequence = 3", "is not the digest its detail names", id="repointed"),
        pytest.param("UPDATE published SET sequence = 2 WHERE sequence = 3", "not a POLICY_RELOADED event",
                     id="moved"),
    ],
)  # fmt: skip
def test_verify_checks_every_published_policy_against_its_event_and_digest(
    db: Path, statement: str, reason: str
) -> None:
    with AuditLog.open(db) as log:
        log.append([published(M1)])
        log.append([ev(A.MAPPING_CREATED, category_id="C1", destination="heap"), published(M2)])
    assert verify(db).ok
    tamper_policies(db, statement)
    result = verify(db)
    assert (result.ok, result.kind) == (False, "policy")
    assert reason in result.reason
    assert result.broken_sequence in (2, 3)
    assert str(result).startswith(f"broken at sequence {result.broken_sequence}:")
