"""The tamper-evident audit trail on SQLite: append (hash chain), page, watch, verify.

Owns the audit database file: its schema, the durability settings (WAL, synchronous=FULL),
the sha256 hash chain and its canonical encoding, keyset paging with opaque tokens, live
fan-out to asyncio watchers, and chain verification. Must never rewrite or delete an event,
decide policy, touch the mapping file, import generated protobuf code, or configure
structlog: services translate `AuditRecord`s to consent.v1.AuditEvent and map the errors.

Canonical encoding (what `hash` covers; reproducible in any language). For each event,
the UTF-8 bytes of the JSON object with exactly these ten keys, serialised with keys
sorted, no whitespace (separators "," and ":"), non-ASCII characters written as
themselves (not \\u escapes; json.dumps(..., sort_keys=True, separators=(",", ":"),
ensure_ascii=False) in Python):

    sequence     JSON integer, 1, 2, 3, ...
    time         string, RFC 3339 UTC with exactly six fractional digits and "Z",
                 e.g. "2024-05-01T12:00:00.000000Z"
    actor        string
    action       string, the consent.v1 enum value name, e.g. "AUDIT_ACTION_CATEGORY_CREATED"
    category_id  string ("" where none)
    destination  string ("" where none)
    before_json  string ("" where none; itself compact sorted-key JSON when set)
    after_json   string (same)
    detail       string
    prev_hash    string, the previous event's `hash`; 64 "0"s for sequence 1

    hash = lowercase hex sha256 of those bytes.

Published policies (not part of the chain, content-addressed instead). A POLICY_RELOADED
`NewEvent` may carry the policy it published, `policy=(digest, canonical)`: the canonical
JSON of the mapping and its sha256 hex, which the event's detail must name ("digest <hex>",
so the chain commits to it). It is stored in the event's transaction in two more tables:
`policies(digest PRIMARY KEY, canonical)`, one row per distinct policy, and
`published(sequence PRIMARY KEY, digest)`, one row per event that published one. A start
diffs the last published policy (`last_published_policy`) against the file, so edits made
while the sidecar was stopped, or written just before a crash, still get their category
events. Trails written before these tables existed simply have no rows: the tables are
added, empty, when such a database is opened (the schema version stays 1: older binaries
ignore them), and `verify` checks them only where rows exist.

So each hash commits to the event's position and to every earlier event. `verify` finds
altered, removed, reordered or re-chained rows; it cannot see the newest events being cut
off the end, for that compare with the last hash a log shipper saw (each event is also
logged as one structlog line "audit" carrying its hash).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import structlog
from consent_core import errors
from consent_core.diff import AuditAction, Change

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "GENESIS_HASH",
    "MAX_PAGE_SIZE",
    "AuditError",
    "AuditLog",
    "AuditRecord",
    "BreakKind",
    "NewEvent",
    "PublishedPolicy",
    "VerifyResult",
    "canonical_bytes",
    "canonical_json",
    "changes_to_events",
    "event_hash",
    "format_time",
    "verify",
]

GENESIS_HASH: Final = "0" * 64
DEFAULT_PAGE_SIZE: Final = 100
MAX_PAGE_SIZE: Final = 1000
WATCH_CHUNK: Final = 500  # backlog rows read per query while a watcher catches up

# Identifies our files: `PRAGMA application_id` ("CSA1") and `PRAGMA user_version` (schema version).
_APPLICATION_ID: Final = 0x43534131
_SCHEMA_VERSION: Final = 1
_TABLE: Final = "audit_events"
_COLUMNS: Final = (
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
_SELECT: Final = f"SELECT {', '.join(_COLUMNS)} FROM {_TABLE}"
_SCHEMA: Final = (
    f"""CREATE TABLE {_TABLE} (
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
    f"CREATE INDEX {_TABLE}_by_category ON {_TABLE} (category_id, sequence)",
    f"CREATE INDEX {_TABLE}_by_action ON {_TABLE} (action, sequence)",
    f"PRAGMA application_id = {_APPLICATION_ID}",
    f"PRAGMA user_version = {_SCHEMA_VERSION}",
)
_POLICIES: Final = "policies"
_PUBLISHED: Final = "published"
# Added (IF NOT EXISTS) at every writable open: a database from before them gains them, empty.
_POLICY_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS {_POLICIES} (
    digest    TEXT PRIMARY KEY,
    canonical TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS {_PUBLISHED} (
    sequence INTEGER PRIMARY KEY,
    digest   TEXT NOT NULL
) STRICT;
"""
# Accidental writes through sqlite fail; deliberate tampering (dropping these) is what verify is for.
_TRIGGERS: Final = f"""
CREATE TRIGGER IF NOT EXISTS {_TABLE}_no_update BEFORE UPDATE ON {_TABLE}
BEGIN SELECT RAISE(ABORT, '{_TABLE} is append-only: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS {_TABLE}_no_delete BEFORE DELETE ON {_TABLE}
BEGIN SELECT RAISE(ABORT, '{_TABLE} is append-only: DELETE refused'); END;
""" + "".join(
    f"""
CREATE TRIGGER IF NOT EXISTS {t}_no_update BEFORE UPDATE ON {t}
BEGIN SELECT RAISE(ABORT, '{t} is append-only: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS {t}_no_delete BEFORE DELETE ON {t}
BEGIN SELECT RAISE(ABORT, '{t} is append-only: DELETE refused'); END;
"""
    for t in (_POLICIES, _PUBLISHED)
)


class AuditError(errors.SidecarError):
    """The audit database cannot be opened or used (missing directory, foreign file, closed log)."""


class _Logger(Protocol):
    def info(self, event: str, **kw: Any) -> Any: ...


# ---------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append; the log assigns sequence, time and the hashes."""

    actor: str  # principal id, "file:<basename>" or "system"
    action: AuditAction
    category_id: str = ""
    destination: str = ""
    before_json: str = ""
    after_json: str = ""
    detail: str = ""
    # POLICY_RELOADED only: the policy it published, (sha256 hex digest, canonical mapping JSON);
    # stored beside the event, not part of its hash (module docstring).
    policy: tuple[str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class PublishedPolicy:
    """The policy a POLICY_RELOADED event published, as stored with it (see the module docstring)."""

    sequence: int  # of the POLICY_RELOADED event
    digest: str  # sha256 hex of canonical
    canonical: str  # the mapping's canonical JSON (consent_core.model.ConsentMapping.canonical_bytes, decoded)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One stored event, as consent.v1.AuditEvent carries it (time is a UTC datetime)."""

    sequence: int
    time: datetime
    actor: str
    action: AuditAction
    category_id: str
    destination: str
    before_json: str
    after_json: str
    detail: str
    prev_hash: str
    hash: str

    def canonical_bytes(self) -> bytes:
        """The bytes `hash` is the sha256 of (see the module docstring)."""
        return canonical_bytes(
            sequence=self.sequence,
            time=format_time(self.time),
            actor=self.actor,
            action=self.action,
            category_id=self.category_id,
            destination=self.destination,
            before_json=self.before_json,
            after_json=self.after_json,
            detail=self.detail,
            prev_hash=self.prev_hash,
        )


def format_time(t: datetime) -> str:
    """RFC 3339 UTC with microseconds and "Z", e.g. 2024-05-01T12:00:00.000000Z; rejects naive datetimes."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"audit time must be timezone-aware, got naive {t!r}")
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(s: str) -> datetime:
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys and literal non-ASCII: the form of before_json / after_json."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_bytes(
    *,
    sequence: int,
    time: str,
    actor: str,
    action: AuditAction | int,
    category_id: str,
    destination: str,
    before_json: str,
    after_json: str,
    detail: str,
    prev_hash: str,
) -> bytes:
    """The canonical encoding of one event (module docstring); `time` already formatted."""
    return canonical_json(
        {
            "sequence": sequence,
            "time": time,
            "actor": actor,
            "action": AuditAction(action).proto_name,
            "category_id": category_id,
            "destination": destination,
            "before_json": before_json,
            "after_json": after_json,
            "detail": detail,
            "prev_hash": prev_hash,
        }
    ).encode("utf-8")


def event_hash(canonical: bytes) -> str:
    """sha256 lowercase hex of a canonical encoding."""
    return hashlib.sha256(canonical).hexdigest()


def changes_to_events(changes: Sequence[Change], actor: str) -> list[NewEvent]:
    """One NewEvent per change, before/after as canonical JSON ("" where the category is absent)."""
    return [
        NewEvent(
            actor=actor,
            action=c.action,
            category_id=c.category_id,
            destination=c.destination,
            before_json="" if c.before is None else canonical_json(c.before),
            after_json="" if c.after is None else canonical_json(c.after),
        )
        for c in changes
    ]


def _check_new_event(i: int, e: NewEvent) -> None:
    try:
        action = AuditAction(e.action)
    except ValueError:
        action = AuditAction.UNSPECIFIED
    if action is AuditAction.UNSPECIFIED:
        raise ValueError(f"entries[{i}].action: {e.action!r} is not a recordable AuditAction")
    if not e.actor:
        raise ValueError(f"entries[{i}].actor: must not be empty")
    _check_policy(i, e)
    for name in ("actor", "category_id", "destination", "before_json", "after_json", "detail"):
        value = getattr(e, name)
        if not isinstance(value, str):
            raise ValueError(f"entries[{i}].{name}: must be a str, got {type(value).__name__}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"entries[{i}].{name}: not encodable as UTF-8 ({exc.reason})") from None


def _check_policy(i: int, e: NewEvent) -> None:
    if e.policy is None:
        return
    if e.action != AuditAction.POLICY_RELOADED:
        raise ValueError(f"entries[{i}].policy: only a POLICY_RELOADED event publishes a policy")
    if not (isinstance(e.policy, tuple) and len(e.policy) == 2 and all(isinstance(v, str) for v in e.policy)):
        raise ValueError(f"entries[{i}].policy: must be a (digest, canonical) pair of str")
    digest, canonical = e.policy
    try:
        actual = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    except UnicodeEncodeError as exc:
        raise ValueError(f"entries[{i}].policy: canonical is not encodable as UTF-8 ({exc.reason})") from None
    if actual != digest:
        raise ValueError(f"entries[{i}].policy: canonical hashes to {actual}, not to its digest {digest!r}")
    if f"digest {digest}" not in e.detail:
        raise ValueError(f"entries[{i}].policy: the event's detail must name 'digest {digest}'")


def _row_to_record(row: tuple[Any, ...]) -> AuditRecord:
    seq, time, actor, action, category_id, destination, before_json, after_json, detail, prev_hash, hash_ = row
    return AuditRecord(
        sequence=seq,
        time=_parse_time(time),
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


# ---------------------------------------------------------------------------- opening


def _connect(path: Path, *, read_only: bool) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; we issue BEGIN IMMEDIATE / COMMIT ourselves.
    if read_only:
        uri = f"{path.absolute().as_uri()}?mode=ro"
        return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=30.0)
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)


def _check_schema(conn: sqlite3.Connection, path: Path) -> bool:
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
    columns = tuple(r[1] for r in conn.execute(f"PRAGMA table_info({_TABLE})"))
    if columns != _COLUMNS:
        raise AuditError(f"{path}: table {_TABLE} has columns {list(columns)}, expected {list(_COLUMNS)}")
    return True


def _create_schema(conn: sqlite3.Connection) -> None:
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


# ---------------------------------------------------------------------------- watchers


class _Watcher:
    """One `watch()` iterator's end of the fan-out; `deliver` and `close` run on its loop (call_soon_threadsafe)."""

    __slots__ = ("buffer", "closed", "dropped", "forget", "live", "loop", "queue")

    def __init__(self, loop: asyncio.AbstractEventLoop, buffer: int, forget: Callable[[_Watcher], None]) -> None:
        self.loop = loop
        self.forget = forget  # deregisters from the log
        self.buffer = buffer
        self.queue: asyncio.Queue[AuditRecord | None] = asyncio.Queue(maxsize=buffer)
        self.live = False  # False while catching up from the database: deliveries are read there instead
        self.closed = False  # the log was closed: end cleanly
        self.dropped = False  # the buffer overflowed: cut off

    def deliver(self, records: list[AuditRecord]) -> None:
        """On the loop: queue new records; on overflow mark the watcher cut off and wake it."""
        if self.closed or self.dropped or not self.live:
            return
        for r in records:
            try:
                self.queue.put_nowait(r)
            except asyncio.QueueFull:
                # Cut off: stop receiving, free the buffer; the iterator raises at its next step.
                self.dropped = True
                self.forget(self)
                while not self.queue.empty():
                    self.queue.get_nowait()
                self.queue.put_nowait(None)
                return

    def close(self) -> None:
        """On the loop: end the iterator at its next step (wakes it if it waits on an empty queue)."""
        self.closed = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)


# ---------------------------------------------------------------------------- the log


class AuditLog:
    """An open audit database: one writer (thread-safe), any number of readers and watchers.

    Every method but `watch` blocks on SQLite (and `append` on fsync): from asyncio code call
    them through `asyncio.to_thread`. Build with `AuditLog.open(path)`; `close()` when done.
    """

    def __init__(
        self,
        path: Path,
        conn: sqlite3.Connection,
        *,
        clock: Callable[[], datetime],
        logger: _Logger | None,
    ) -> None:
        self._path = path
        self._conn = conn  # the writer connection, used only under _write_lock
        self._clock = clock
        self._logger: _Logger = (
            logger
            if logger is not None
            else structlog.get_logger("consent_sidecar.audit", logger_name="consent_sidecar.audit")
        )
        self._write_lock = threading.Lock()  # one writer; also orders the hand-off to watchers
        self._readers: list[sqlite3.Connection] = []  # idle read connections
        self._readers_lock = threading.Lock()
        self._watchers: set[_Watcher] = set()
        self._watchers_lock = threading.Lock()
        self._closed = False

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], datetime] | None = None,
        logger: _Logger | None = None,
    ) -> AuditLog:
        """Open (creating if absent) the audit database at `path`.

        The parent directory must exist (AuditError otherwise: no directory is created).
        An existing file that is not a consent-sidecar audit database is refused with
        AuditError. `clock` returns the aware time of each batch (default: now, UTC);
        `logger` receives one "audit" line per event (default: structlog.get_logger()).
        """
        p = Path(path)
        if not p.parent.is_dir():
            raise AuditError(f"{p}: directory {str(p.parent)!r} does not exist")
        if p.is_dir():
            raise AuditError(f"{p}: is a directory")
        try:
            conn = _connect(p, read_only=False)
        except sqlite3.Error as exc:
            raise AuditError(f"{p}: cannot open audit database: {exc}") from exc
        try:
            ours = _check_schema(conn, p)  # before writing anything: a foreign file stays untouched
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]  # persistent, in the file
            if str(mode).lower() != "wal":
                raise AuditError(f"{p}: cannot use WAL journal mode (got {mode!r})")
            conn.execute("PRAGMA synchronous = FULL")  # per connection: every commit fsyncs the WAL
            if not ours:
                _create_schema(conn)
                _check_schema(conn, p)
            conn.executescript(_POLICY_SCHEMA)  # adds the policy tables to a database from before them
            conn.executescript(_TRIGGERS)  # restores them if someone dropped them
        except sqlite3.Error as exc:
            conn.close()
            raise AuditError(f"{p}: cannot open audit database: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return cls(p, conn, clock=clock or (lambda: datetime.now(UTC)), logger=logger)

    @property
    def path(self) -> Path:
        return self._path

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ append

    def append(self, entries: Sequence[NewEvent]) -> list[AuditRecord]:
        """Append `entries` in one transaction: all durable (committed, fsynced) or none.

        Returns the stored records once committed. Sequences continue from the last event,
        each `prev_hash` is the previous event's hash; all events of one call share one
        time from the clock. The policy a POLICY_RELOADED entry carries (`NewEvent.policy`)
        is stored in the same transaction (module docstring). ValueError for an unrecordable
        entry, or a policy on another action, not hashing to its digest or not named in the
        event's detail (nothing appended); errors.Unavailable if SQLite fails (nothing
        appended); AuditError once closed.
        """
        if not entries:
            return []
        for i, e in enumerate(entries):
            _check_new_event(i, e)
        with self._write_lock:
            if self._closed:
                raise AuditError(f"{self._path}: audit log is closed")
            time = format_time(self._clock())  # under the lock: times never go backwards along sequences
            records = self._append_locked(entries, time)
            self._hand_off(records)
        self._log(records)
        return records

    def _append_locked(self, entries: Sequence[NewEvent], time: str) -> list[AuditRecord]:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise errors.Unavailable(f"audit log {self._path}: cannot start a transaction: {exc}") from exc
        try:
            head = conn.execute(f"SELECT sequence, hash FROM {_TABLE} ORDER BY sequence DESC LIMIT 1").fetchone()
            seq, prev = (0, GENESIS_HASH) if head is None else (int(head[0]), str(head[1]))
            records: list[AuditRecord] = []
            for e in entries:
                seq += 1
                action = AuditAction(e.action)
                digest = event_hash(
                    canonical_bytes(
                        sequence=seq,
                        time=time,
                        actor=e.actor,
                        action=action,
                        category_id=e.category_id,
                        destination=e.destination,
                        before_json=e.before_json,
                        after_json=e.after_json,
                        detail=e.detail,
                        prev_hash=prev,
                    )
                )
                row = (seq, time, e.actor, int(action), e.category_id, e.destination,
                       e.before_json, e.after_json, e.detail, prev, digest)  # fmt: skip
                conn.execute(f"INSERT INTO {_TABLE} ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * 11)})", row)
                records.append(_row_to_record(row))
                prev = digest
                if e.policy is not None:  # content-addressed: a policy published again is stored once
                    conn.execute(f"INSERT OR IGNORE INTO {_POLICIES} (digest, canonical) VALUES (?, ?)", e.policy)
                    conn.execute(f"INSERT INTO {_PUBLISHED} (sequence, digest) VALUES (?, ?)", (seq, e.policy[0]))
            conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise errors.Unavailable(f"audit log {self._path}: append failed, nothing written: {exc}") from exc
            raise
        return records

    def _hand_off(self, records: list[AuditRecord]) -> None:
        """Under the write lock (so every loop gets batches in commit order): schedule delivery, never block."""
        with self._watchers_lock:
            watchers = list(self._watchers)
        for w in watchers:
            try:
                w.loop.call_soon_threadsafe(w.deliver, records)
            except RuntimeError:  # its loop is closed: nobody is listening any more
                self._forget(w)

    def _log(self, records: list[AuditRecord]) -> None:
        logger = self._logger
        for r in records:
            # The events are durable already: a failing log sink must not turn the append into an error.
            with contextlib.suppress(Exception):
                logger.info(
                    "audit",
                    sequence=r.sequence,
                    time=format_time(r.time),
                    actor=r.actor,
                    action=r.action.proto_name,
                    category_id=r.category_id,
                    destination=r.destination,
                    detail=r.detail,
                    prev_hash=r.prev_hash,
                    hash=r.hash,
                )

    # ------------------------------------------------------------------ reading

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        with self._readers_lock:
            if self._closed:
                raise AuditError(f"{self._path}: audit log is closed")
            conn = self._readers.pop() if self._readers else None
        if conn is None:
            try:
                conn = _connect(self._path, read_only=True)
            except sqlite3.Error as exc:
                raise errors.Unavailable(f"audit log {self._path}: cannot open a reader: {exc}") from exc
        try:
            yield conn
        finally:
            with self._readers_lock:
                if self._closed:
                    conn.close()
                else:
                    self._readers.append(conn)

    def _select(self, where: str, params: Sequence[Any], limit: int) -> list[AuditRecord]:
        sql = f"{_SELECT} WHERE {where} ORDER BY sequence LIMIT ?"
        with self._reader() as conn:
            try:
                rows = conn.execute(sql, (*params, limit)).fetchall()
            except sqlite3.Error as exc:
                raise errors.Unavailable(f"audit log {self._path}: read failed: {exc}") from exc
        return [_row_to_record(r) for r in rows]

    def last_published_policy(self) -> PublishedPolicy | None:
        """The policy the newest POLICY_RELOADED event published, if it was stored with it.

        None for an empty trail, or when that event has no stored policy (written before
        policies were kept, or by a writer that did not pass one): then nothing is known
        about what was serving last. errors.Unavailable if SQLite fails.
        """
        with self._reader() as conn:
            try:
                head = conn.execute(
                    f"SELECT sequence FROM {_TABLE} WHERE action = ? ORDER BY sequence DESC LIMIT 1",
                    (int(AuditAction.POLICY_RELOADED),),
                ).fetchone()
                if head is None:
                    return None
                row = conn.execute(
                    f"SELECT p.digest, p.canonical FROM {_PUBLISHED} AS pub JOIN {_POLICIES} AS p "
                    "ON p.digest = pub.digest WHERE pub.sequence = ?",
                    (head[0],),
                ).fetchone()
            except sqlite3.Error as exc:
                raise errors.Unavailable(f"audit log {self._path}: read failed: {exc}") from exc
        if row is None:
            return None
        return PublishedPolicy(sequence=int(head[0]), digest=str(row[0]), canonical=str(row[1]))

    def page(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        category_id: str = "",
        action: int = 0,
        after_sequence: int = 0,
    ) -> tuple[list[AuditRecord], str]:
        """One page of events in sequence order, and the token of the next page.

        Filters (each optional, combined with AND): `category_id`, `action` (0 = any),
        `after_sequence` (only greater sequences). `page_size` 0 means 100, at most 1000.
        Keyset pagination on sequence: events appended between calls are neither lost
        nor repeated. The next token is "" when no further event matches right now (a
        page shorter than page_size always ends with ""); it is only valid with the same
        filters. errors.InvalidArgument names page_size, page_token, action or
        after_sequence when one is unusable.
        """
        if page_size < 0:
            raise errors.InvalidArgument("page_size", f"must not be negative (got {page_size})")
        if page_size > MAX_PAGE_SIZE:
            raise errors.InvalidArgument("page_size", f"must be at most {MAX_PAGE_SIZE} (got {page_size})")
        if after_sequence < 0:
            raise errors.InvalidArgument("after_sequence", f"must not be negative (got {after_sequence})")
        if action:
            try:
                AuditAction(action)
            except ValueError:
                raise errors.InvalidArgument("action", f"unknown AuditAction value {action}") from None
        size = page_size or DEFAULT_PAGE_SIZE
        fingerprint = _filters_fingerprint(category_id, int(action), after_sequence)
        start = after_sequence
        if page_token:
            start = max(start, _decode_token(page_token, fingerprint))
        where: list[str] = ["sequence > ?"]
        params: list[Any] = [start]
        if category_id:
            where.append("category_id = ?")
            params.append(category_id)
        if action:
            where.append("action = ?")
            params.append(int(action))
        records = self._select(" AND ".join(where), params, size + 1)  # one extra: are there more?
        if len(records) <= size:
            return records, ""
        records = records[:size]
        return records, _encode_token(records[-1].sequence, fingerprint)

    # ------------------------------------------------------------------ watching

    @property
    def watchers(self) -> int:
        """How many watch() iterators are currently registered (for metrics and tests)."""
        with self._watchers_lock:
            return len(self._watchers)

    def _forget(self, w: _Watcher) -> None:
        with self._watchers_lock:
            self._watchers.discard(w)

    async def watch(
        self,
        after_sequence: int,
        *,
        buffer: int = 1024,
        on_live: Callable[[], object] | None = None,
    ) -> AsyncGenerator[AuditRecord, None]:
        """Every event after `after_sequence` in order, then live events as they are appended.

        The backlog is read from the database in chunks (off the event loop); then the
        iterator follows appends from any thread without gap or duplicate at the seam.
        Up to `buffer` live events wait for a slow consumer; one more cuts it off with
        errors.ResourceExhausted (the appender and other watchers never wait). Ends
        cleanly when the log is closed. Any number of watchers, on any event loops.
        `on_live` is called once, on the loop, when the backlog is read and appends are
        followed live (from then on a consumer that stops reading can be cut off).
        Leave early with `aclose()` (or let the generator be collected).
        """
        if after_sequence < 0:
            raise errors.InvalidArgument("after_sequence", f"must not be negative (got {after_sequence})")
        if buffer < 1:
            raise ValueError(f"buffer must be at least 1 (got {buffer})")
        w = _Watcher(asyncio.get_running_loop(), buffer, self._forget)
        with self._watchers_lock:
            if self._closed:
                return
            self._watchers.add(w)
        try:
            last = after_sequence
            # Catch up from the database; while not live, deliveries are dropped (the database has them).
            # Then go live and read once more: anything committed before the switch is in the database,
            # anything handed off after it is in the queue, and sequences <= last are skipped.
            for live in (False, True):
                w.live = live
                if live and on_live is not None:
                    on_live()
                while True:
                    try:
                        chunk = await asyncio.to_thread(self._select, "sequence > ?", (last,), WATCH_CHUNK)
                    except AuditError:
                        if w.closed or self._closed:
                            return
                        raise
                    for r in chunk:
                        if w.closed:
                            return
                        if w.dropped:
                            raise _cut_off(w, last)
                        yield r
                        last = r.sequence
                    if len(chunk) < WATCH_CHUNK:
                        break
            while True:
                if w.closed:
                    return
                if w.dropped:
                    raise _cut_off(w, last)
                item = await w.queue.get()
                if w.dropped:
                    raise _cut_off(w, last)
                if item is None or w.closed:
                    return
                if item.sequence <= last:
                    continue
                yield item
                last = item.sequence
        finally:
            self._forget(w)

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """End every watcher cleanly and close the database; idempotent, callable from any thread."""
        with self._write_lock:
            if self._closed:
                return
            with self._readers_lock:
                self._closed = True
                readers, self._readers = self._readers, []
            with self._watchers_lock:
                watchers, self._watchers = list(self._watchers), set()
            self._conn.close()
        for conn in readers:
            conn.close()
        for w in watchers:
            with contextlib.suppress(RuntimeError):  # loop already closed
                w.loop.call_soon_threadsafe(w.close)


def _cut_off(w: _Watcher, last: int) -> errors.ResourceExhausted:
    return errors.ResourceExhausted(
        f"audit watcher fell behind: more than {w.buffer} events waiting; "
        f"watch again with after_sequence={last} to resume"
    )


# ---------------------------------------------------------------------------- page tokens


def _filters_fingerprint(category_id: str, action: int, after_sequence: int) -> str:
    data = canonical_json({"category_id": category_id, "action": action, "after_sequence": after_sequence})
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:16]


def _encode_token(last: int, fingerprint: str) -> str:
    raw = canonical_json({"v": 1, "last": last, "f": fingerprint}).encode("ascii")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode_token(token: str, fingerprint: str) -> int:
    """The last sequence a token carries; InvalidArgument naming page_token if unusable."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise errors.InvalidArgument("page_token", "not a token issued by this server") from None
    if (
        not isinstance(data, dict)
        or data.get("v") != 1
        or not isinstance(data.get("f"), str)
        or not isinstance(data.get("last"), int)
        or isinstance(data.get("last"), bool)
        or data["last"] < 0
    ):
        raise errors.InvalidArgument("page_token", "not a token issued by this server")
    if data["f"] != fingerprint:
        raise errors.InvalidArgument(
            "page_token", "was issued for other filters (category_id, action, after_sequence); repeat them exactly"
        )
    return int(data["last"])


# ---------------------------------------------------------------------------- verify


BreakKind = Literal["removed", "altered", "reordered", "bad_first_prev_hash", "relinked", "unreadable", "policy"]
"""How a chain broke: a sequence gap; a row whose hash does not match; a row holding another
sequence's contents; a first prev_hash other than zeros; a prev_hash not matching the previous
row's (valid) hash, i.e. that row was rewritten with a recomputed hash; a field that cannot be
encoded (e.g. an unknown action number); a stored published policy that does not match its
event or its digest (see `verify`)."""


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of `verify`: ok with the number of events, or the first broken sequence and why."""

    ok: bool
    count: int  # events verified intact (all of them when ok; those before the break otherwise)
    broken_sequence: int | None = None
    reason: str = ""
    kind: BreakKind | Literal[""] = ""
    last_hash: str = ""  # hash of the last event when ok (compare with the last one a log shipper saw)

    def __str__(self) -> str:
        if self.ok:
            return f"ok: {self.count} events, chain intact (last hash {self.last_hash or GENESIS_HASH})"
        return f"broken at sequence {self.broken_sequence}: {self.reason}"


def _row_hash(row: tuple[Any, ...], *, sequence: int | None = None) -> str | None:
    """Recomputed hash of a stored row (optionally as if at another sequence); None if unreadable."""
    seq, time, actor, action, category_id, destination, before_json, after_json, detail, prev_hash, _ = row
    try:
        return event_hash(
            canonical_bytes(
                sequence=seq if sequence is None else sequence,
                time=time,
                actor=actor,
                action=action,
                category_id=category_id,
                destination=destination,
                before_json=before_json,
                after_json=after_json,
                detail=detail,
                prev_hash=prev_hash,
            )
        )
    except (ValueError, TypeError, UnicodeEncodeError):
        return None


def _moved_from(conn: sqlite3.Connection, row: tuple[Any, ...]) -> int | None:
    """The sequence a row's contents were written at, if they verify there (the row was moved)."""
    prev_hash = row[9]
    if prev_hash == GENESIS_HASH:
        candidates = [1]
    else:
        candidates = [r[0] + 1 for r in conn.execute(f"SELECT sequence FROM {_TABLE} WHERE hash = ?", (prev_hash,))]
    for seq in candidates:
        if seq != row[0] and _row_hash(row, sequence=seq) == row[10]:
            return int(seq)
    return None


def verify(path: str | os.PathLike[str]) -> VerifyResult:
    """Walk the chain of the audit database at `path` (opened read-only) and check every link.

    Checks, in sequence order: sequences are exactly 1..N (a gap = a removed row), each
    stored hash equals the recomputed hash of its row (else altered, or moved from the
    sequence named), the first prev_hash is 64 zeros and every other prev_hash equals the
    previous event's hash (else rows were reordered or an earlier event rewritten with a
    valid hash). Then, once the chain is intact, every stored published policy: its event
    is a POLICY_RELOADED whose detail names its digest, and its canonical mapping is stored
    and hashes to that digest (else kind "policy"). Stops at the first break. AuditError if
    the file is missing or foreign.
    """
    p = Path(path)
    if not p.is_file():
        raise AuditError(f"{p}: no such audit database")
    try:
        conn = _connect(p, read_only=True)
    except sqlite3.Error as exc:
        raise AuditError(f"{p}: cannot open audit database: {exc}") from exc
    try:
        if not _check_schema(conn, p):
            raise AuditError(f"{p}: not a consent-sidecar audit database (empty file)")
        result = _walk(conn)
        return _walk_policies(conn, result) if result.ok else result
    except sqlite3.Error as exc:
        raise AuditError(f"{p}: cannot read audit database: {exc}") from exc
    finally:
        conn.close()


def _check_row(
    conn: sqlite3.Connection, row: tuple[Any, ...], expected: int, prev: str
) -> tuple[BreakKind, str] | None:
    """(kind, reason) if this row, expected at sequence `expected` after hash `prev`, breaks the chain."""
    seq, stored_prev, stored_hash = row[0], row[9], row[10]
    if seq != expected:
        return "removed", f"event {expected} is missing (next is {seq}): a row was removed"
    recomputed = _row_hash(row)
    if recomputed is None:
        return "unreadable", f"event {seq} has an invalid field (action {row[3]!r}, time {row[1]!r})"
    if recomputed != stored_hash:
        origin = _moved_from(conn, row)
        if origin is not None:
            return "reordered", f"event {seq} holds the contents of event {origin}: rows were reordered"
        return "altered", f"event {seq}'s hash does not match its contents: the row was altered"
    if stored_prev != prev:
        if seq == 1:
            return "bad_first_prev_hash", "event 1's prev_hash is not 64 zeros"
        return (
            "relinked",
            f"event {seq}'s prev_hash does not match event {seq - 1}'s hash: "
            f"event {seq - 1} was rewritten or rows were reordered",
        )
    return None


def _walk(conn: sqlite3.Connection) -> VerifyResult:
    expected, prev = 1, GENESIS_HASH
    walker = conn.cursor()
    walker.execute(f"{_SELECT} ORDER BY sequence")
    while rows := walker.fetchmany(1000):
        for row in rows:
            problem = _check_row(conn, row, expected, prev)
            if problem is not None:
                kind, reason = problem
                return VerifyResult(ok=False, count=expected - 1, broken_sequence=expected, reason=reason, kind=kind)
            prev, expected = row[10], expected + 1
    return VerifyResult(ok=True, count=expected - 1, last_hash=prev if expected > 1 else "")


def _walk_policies(conn: sqlite3.Connection, chain: VerifyResult) -> VerifyResult:
    """`chain` (intact) unless a published policy row does not match its event or digest."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not {_POLICIES, _PUBLISHED} <= tables:
        return chain  # a database from before policies were kept, opened read-only: nothing to check
    checked: set[str] = set()
    published = conn.cursor()
    published.execute(f"SELECT sequence, digest FROM {_PUBLISHED} ORDER BY sequence")
    while rows := published.fetchmany(1000):
        for seq, digest in rows:
            problem = _check_published(conn, seq, digest, checked)
            if problem is not None:
                return VerifyResult(ok=False, count=max(0, min(seq, chain.count + 1) - 1),
                                    broken_sequence=seq, reason=problem, kind="policy")  # fmt: skip
    return chain


def _check_published(conn: sqlite3.Connection, seq: int, digest: str, checked: set[str]) -> str | None:
    event = conn.execute(f"SELECT action, detail FROM {_TABLE} WHERE sequence = ?", (seq,)).fetchone()
    if event is None or event[0] != int(AuditAction.POLICY_RELOADED):
        return f"a published policy names event {seq}, which is not a POLICY_RELOADED event"
    if f"digest {digest}" not in event[1]:
        return f"the policy published by event {seq} ({digest}) is not the digest its detail names"
    if digest in checked:
        return None
    row = conn.execute(f"SELECT canonical FROM {_POLICIES} WHERE digest = ?", (digest,)).fetchone()
    if row is None:
        return f"the policy published by event {seq} ({digest}) is not stored"
    canonical = row[0]
    if not isinstance(canonical, str) or hashlib.sha256(canonical.encode("utf-8")).hexdigest() != digest:
        return f"the stored policy {digest} (published by event {seq}) does not hash to its digest: it was altered"
    checked.add(digest)
    return None
