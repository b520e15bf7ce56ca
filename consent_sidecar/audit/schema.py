"""The audit database's on-disk format: tables, append-only triggers, identification, rows.

Owns the SQL schema (the `audit_events` chain table and the `policies` / `published`
tables of published policies), the triggers refusing UPDATE and DELETE, the pragmas that
identify our files (`application_id` "CSA1", `user_version` = schema version), how a
connection is opened, and the stored row <-> `AuditRecord` mapping. Shared by the store
(`sqlite`) and the checker (`verify`), so both read one definition. Must never change a
released table without a new schema version (new tables are added empty, IF NOT EXISTS),
nor write events: the store does.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Final

from consent_core import errors

from consent_sidecar.audit.records import AuditAction, AuditRecord, format_time, parse_time

__all__ = [
    "COLUMNS",
    "POLICIES",
    "POLICY_SCHEMA",
    "PUBLISHED",
    "SELECT",
    "TABLE",
    "TRIGGERS",
    "AuditError",
    "check_schema",
    "connect",
    "create_schema",
    "record_to_row",
    "row_bytes",
    "row_to_record",
]


class AuditError(errors.SidecarError):
    """The audit database cannot be opened or used (missing directory, foreign file, closed log)."""


# Identifies our files: `PRAGMA application_id` ("CSA1") and `PRAGMA user_version` (schema version).
_APPLICATION_ID: Final = 0x43534131
_SCHEMA_VERSION: Final = 1
TABLE: Final = "audit_events"
COLUMNS: Final = (
    "sequence",
    "time",
    "actor",
    "action",
    "category_id",
    "destination",
    "before_json",
    "after_json",
    "detail",
    "prev_hash",
    "hash",
)
SELECT: Final = f"SELECT {', '.join(COLUMNS)} FROM {TABLE}"
_SCHEMA: Final = (
    f"""CREATE TABLE {TABLE} (
        sequence    INTEGER PRIMARY KEY,
        time        TEXT NOT NULL,
        actor       TEXT NOT NULL,
        action      INTEGER NOT NULL,
        category_id TEXT NOT NULL,
        destination TEXT NOT NULL,
        before_json TEXT NOT NULL,
        after_json  TEXT NOT NULL,
        detail      TEXT NOT NULL,
        prev_hash   TEXT NOT NULL,
        hash        TEXT NOT NULL
    ) STRICT""",
    f"CREATE INDEX {TABLE}_by_category ON {TABLE} (category_id, sequence)",
    f"CREATE INDEX {TABLE}_by_action ON {TABLE} (action, sequence)",
    f"PRAGMA application_id = {_APPLICATION_ID}",
    f"PRAGMA user_version = {_SCHEMA_VERSION}",
)
POLICIES: Final = "policies"
PUBLISHED: Final = "published"
# Added (IF NOT EXISTS) at every writable open: a database from before them gains them, empty.
POLICY_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS {POLICIES} (
    digest    TEXT PRIMARY KEY,
    canonical TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS {PUBLISHED} (
    sequence INTEGER PRIMARY KEY,
    digest   TEXT NOT NULL
) STRICT;
"""
# Accidental writes through sqlite fail; deliberate tampering (dropping these) is what verify is for.
TRIGGERS: Final = f"""
CREATE TRIGGER IF NOT EXISTS {TABLE}_no_update BEFORE UPDATE ON {TABLE}
BEGIN SELECT RAISE(ABORT, '{TABLE} is append-only: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS {TABLE}_no_delete BEFORE DELETE ON {TABLE}
BEGIN SELECT RAISE(ABORT, '{TABLE} is append-only: DELETE refused'); END;
""" + "".join(
    f"""
CREATE TRIGGER IF NOT EXISTS {t}_no_update BEFORE UPDATE ON {t}
BEGIN SELECT RAISE(ABORT, '{t} is append-only: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS {t}_no_delete BEFORE DELETE ON {t}
BEGIN SELECT RAISE(ABORT, '{t} is append-only: DELETE refused'); END;
"""
    for t in (POLICIES, PUBLISHED)
)


def connect(path: Path, *, read_only: bool) -> sqlite3.Connection:
    """A connection to the database at `path`, shareable across threads (callers serialise its use)."""
    # isolation_level=None: no implicit transactions; we issue BEGIN IMMEDIATE / COMMIT ourselves.
    if read_only:
        uri = f"{path.absolute().as_uri()}?mode=ro"
        return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=30.0)
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)


def check_schema(conn: sqlite3.Connection, path: Path) -> bool:
    """True if the file is ours, False if it is empty (a new database); AuditError if it is foreign."""
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    except sqlite3.DatabaseError as exc:
        raise AuditError(f"{path}: not a consent-sidecar audit database ({exc})") from exc
    if app_id == 0 and version == 0 and not tables:
        return False
    if app_id != _APPLICATION_ID:
        raise AuditError(
            f"{path}: not a consent-sidecar audit database (application_id {app_id:#x}, tables {sorted(tables)})"
        )
    if version != _SCHEMA_VERSION:
        raise AuditError(f"{path}: audit schema version {version} is not supported (expected {_SCHEMA_VERSION})")
    columns = tuple(r[1] for r in conn.execute(f"PRAGMA table_info({TABLE})"))
    if columns != COLUMNS:
        raise AuditError(f"{path}: table {TABLE} has columns {list(columns)}, expected {list(COLUMNS)}")
    return True


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the chain table, its indexes and our identification in an empty database."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Re-check inside the write lock: another process may have created it meanwhile.
        if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
            for statement in _SCHEMA:  # not executescript: it would commit our transaction first
                conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def record_to_row(r: AuditRecord) -> tuple[Any, ...]:
    """A record as its stored row (columns in `COLUMNS` order): the inverse of `row_to_record`."""
    return (r.sequence, format_time(r.time), r.actor, int(r.action), r.category_id, r.destination,
            r.before_json, r.after_json, r.detail, r.prev_hash, r.hash)  # fmt: skip


def row_to_record(row: tuple[Any, ...]) -> AuditRecord:
    """A stored row (columns in `COLUMNS` order) as a record."""
    seq, time, actor, action, category_id, destination, before_json, after_json, detail, prev_hash, hash_ = row
    return AuditRecord(
        sequence=seq,
        time=parse_time(time),
        actor=actor,
        action=AuditAction(action),
        category_id=category_id,
        destination=destination,
        before_json=before_json,
        after_json=after_json,
        detail=detail,
        prev_hash=prev_hash,
        hash=hash_,
    )


_ROW_OVERHEAD: Final = 128  # bytes counted per event beyond its text fields (sequence, time, action, hashes)


def row_bytes(row: tuple[Any, ...]) -> int:
    """What one stored row weighs against a read's byte budget: its text fields as UTF-8, plus overhead."""
    # actor, category_id, destination, before_json, after_json, detail (COLUMNS 2 and 4-8).
    return _ROW_OVERHEAD + sum(len(row[i].encode("utf-8", "surrogatepass")) for i in (2, 4, 5, 6, 7, 8))
