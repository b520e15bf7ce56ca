"""The tamper-evident audit trail on SQLite: append (hash chain), page, watch.

Owns the open audit database: the durability settings (WAL, synchronous=FULL), the one
writer extending the chain (`records`) in one transaction per batch, keyset paging (the
request's checks and opaque tokens are `paging`'s), live fan-out to asyncio watchers
(`watchers`), and the content-addressed store of published policies. Must never rewrite or delete an event,
decide policy, touch the mapping file, import generated protobuf code, or configure
structlog: services translate `AuditRecord`s to consent.v1.AuditEvent and map the errors.
The schema is `schema`'s; checking a whole trail is `verify`'s.

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

Bounded and cut-evident: every read holds at most a page of rows and a byte budget
(`MAX_PAGE_BYTES` per `page`, `WATCH_CHUNK`/`WATCH_CHUNK_BYTES` per backlog read of a
watcher), so neither a large page nor a watcher catching up holds the trail in memory; the
newest event (`head`) is kept in memory and in the anchor file beside the database
(`anchor`), checked when the log opens; the database and its files are mode 0600.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

import structlog
from consent_core import errors

from consent_sidecar.audit.anchor import (
    Head,
    anchor_path,
    check_anchor,
    private_file,
    remove_stale_temps,
    tighten,
    write_anchor,
)
from consent_sidecar.audit.pacing import Pacer, page_paid, page_reserved
from consent_sidecar.audit.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PageQuery
from consent_sidecar.audit.records import (
    GENESIS_HASH,
    AuditAction,
    AuditRecord,
    NewEvent,
    PublishedPolicy,
    chain,
    check_new_event,
    log_fields,
)
from consent_sidecar.audit.schema import (
    COLUMNS,
    POLICIES,
    POLICY_SCHEMA,
    PUBLISHED,
    SELECT,
    TABLE,
    TRIGGERS,
    AuditError,
    check_schema,
    connect,
    create_schema,
    record_to_row,
    row_bytes,
    row_to_record,
)
from consent_sidecar.audit.watchers import Fanout, check_watch, cut_off

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_BYTES", "MAX_PAGE_SIZE", "WATCH_CHUNK", "WATCH_CHUNK_BYTES", "AuditLog"]

# A page ends early once its events' text reaches this (always at least one event): well under
# the 4 MiB default gRPC message limit, whatever the page size asked.
MAX_PAGE_BYTES: Final = 1 << 20
WATCH_CHUNK: Final = 100  # backlog rows read per query while a watcher catches up ...
WATCH_CHUNK_BYTES: Final = 256 << 10  # ... and at most this much event text per query


class _Logger(Protocol):
    def info(self, event: str, **kw: Any) -> Any: ...

    def error(self, event: str, **kw: Any) -> Any: ...


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
        self._fanout = Fanout()
        self._closed = False
        self._head: Head | None = None  # the newest event, read at open, then set by each append

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
        remove_stale_temps(p)
        try:
            private_file(p)  # 0600 from the start: SQLite gives its -wal and -shm the database's mode
            tighten(p)
            conn = connect(p, read_only=False)
        except (OSError, sqlite3.Error) as exc:
            raise AuditError(f"{p}: cannot open audit database: {exc}") from exc
        try:
            ours = check_schema(conn, p)  # before writing anything: a foreign file stays untouched
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]  # persistent, in the file
            if str(mode).lower() != "wal":
                raise AuditError(f"{p}: cannot use WAL journal mode (got {mode!r})")
            conn.execute("PRAGMA synchronous = FULL")  # per connection: every commit fsyncs the WAL
            if not ours:
                create_schema(conn)
                check_schema(conn, p)
            conn.executescript(POLICY_SCHEMA)  # adds the policy tables to a database from before them
            conn.executescript(TRIGGERS)  # restores them if someone dropped them
            head = check_anchor(conn, p)
        except sqlite3.Error as exc:
            conn.close()
            raise AuditError(f"{p}: cannot open audit database: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        log = cls(p, conn, clock=clock or (lambda: datetime.now(UTC)), logger=logger)
        log._head = head
        return log

    @property
    def path(self) -> Path:
        return self._path

    @property
    def head(self) -> Head | None:
        """The newest event (sequence and hash), None while the trail is empty; one attribute read."""
        return self._head

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
            check_new_event(i, e)
        with self._write_lock:
            if self._closed:
                raise AuditError(f"{self._path}: audit log is closed")
            now = self._clock()  # under the lock: times never go backwards along sequences
            records = self._append_locked(entries, now)
            self._head = head = Head(records[-1].sequence, records[-1].hash)
            self._fanout.hand_off(records)
            try:  # under the lock: anchors are written in append order
                write_anchor(self._path, head)
            except OSError as exc:  # the events are durable: a stale anchor only lags, it never lies
                with contextlib.suppress(Exception):
                    self._logger.error("audit anchor not updated", anchor=str(anchor_path(self._path)),
                                       sequence=head.sequence, error=str(exc))  # fmt: skip
        self._log(records)
        return records

    def _append_locked(self, entries: Sequence[NewEvent], now: datetime) -> list[AuditRecord]:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise errors.Unavailable(f"audit log {self._path}: cannot start a transaction: {exc}") from exc
        try:
            head = conn.execute(f"SELECT sequence, hash FROM {TABLE} ORDER BY sequence DESC LIMIT 1").fetchone()
            seq, prev = (0, GENESIS_HASH) if head is None else (int(head[0]), str(head[1]))
            records = chain(seq, prev, entries, now)
            for r, e in zip(records, entries, strict=True):
                conn.execute(f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * 11)})",
                             record_to_row(r))  # fmt: skip
                if e.policy is not None:  # content-addressed: a policy published again is stored once
                    conn.execute(f"INSERT OR IGNORE INTO {POLICIES} (digest, canonical) VALUES (?, ?)", e.policy)
                    conn.execute(f"INSERT INTO {PUBLISHED} (sequence, digest) VALUES (?, ?)", (r.sequence, e.policy[0]))
            conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise errors.Unavailable(f"audit log {self._path}: append failed, nothing written: {exc}") from exc
            raise
        return records

    def _log(self, records: list[AuditRecord]) -> None:
        logger = self._logger
        for r in records:
            # The events are durable already: a failing log sink must not turn the append into an error.
            with contextlib.suppress(Exception):
                logger.info("audit", **log_fields(r))

    # ------------------------------------------------------------------ reading

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        with self._readers_lock:
            if self._closed:
                raise AuditError(f"{self._path}: audit log is closed")
            conn = self._readers.pop() if self._readers else None
        if conn is None:
            try:
                conn = connect(self._path, read_only=True)
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

    def _select(self, where: str, params: Sequence[Any], limit: int, max_bytes: int) -> tuple[list[AuditRecord], bool]:
        """Up to `limit` events in sequence order whose text stays within `max_bytes` (at least one);
        and True when it stopped for the bytes with a further event matching."""
        sql = f"{SELECT} WHERE {where} ORDER BY sequence LIMIT ?"
        out: list[AuditRecord] = []
        used = 0
        with self._reader() as conn:
            try:
                cursor = conn.execute(sql, (*params, limit))
                while rows := cursor.fetchmany(32):  # row by row against the budget, never the whole LIMIT
                    for row in rows:
                        used += row_bytes(row)
                        if out and used > max_bytes:
                            cursor.close()
                            return out, True
                        out.append(row_to_record(row))
            except sqlite3.Error as exc:
                raise errors.Unavailable(f"audit log {self._path}: read failed: {exc}") from exc
        return out, False

    def last_published_policy(self) -> PublishedPolicy | None:
        """The policy the newest POLICY_RELOADED event published, if it was stored with it.

        None for an empty trail, or when that event has no stored policy (written before
        policies were kept, or by a writer that did not pass one): then nothing is known
        about what was serving last. errors.Unavailable if SQLite fails.
        """
        with self._reader() as conn:
            try:
                head = conn.execute(
                    f"SELECT sequence FROM {TABLE} WHERE action = ? ORDER BY sequence DESC LIMIT 1",
                    (int(AuditAction.POLICY_RELOADED),),
                ).fetchone()
                if head is None:
                    return None
                row = conn.execute(
                    f"SELECT p.digest, p.canonical FROM {PUBLISHED} AS pub JOIN {POLICIES} AS p "
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
        nor repeated. A page also ends once its events' text reaches MAX_PAGE_BYTES (it
        always holds at least one event). The next token is "" when no further event
        matches right now; it is only valid with the same filters. errors.InvalidArgument
        names page_size, page_token, action or after_sequence when one is unusable.
        """
        query = PageQuery.parse(page_size=page_size, page_token=page_token, category_id=category_id,
                                action=action, after_sequence=after_sequence)  # fmt: skip
        where: list[str] = ["sequence > ?"]
        params: list[Any] = [query.start]
        if query.category_id:
            where.append("category_id = ?")
            params.append(query.category_id)
        if query.action:
            where.append("action = ?")
            params.append(query.action)
        # One extra row: are there more?
        records, cut = self._select(" AND ".join(where), params, query.size + 1, MAX_PAGE_BYTES)
        if cut:
            return records, query.token_after(records[-1])
        if len(records) <= query.size:
            return records, ""
        records = records[: query.size]
        return records, query.token_after(records[-1])

    # ------------------------------------------------------------------ watching

    @property
    def watchers(self) -> int:
        """How many watch() iterators are currently registered (for metrics and tests)."""
        return len(self._fanout)

    async def watch(
        self,
        after_sequence: int,
        *,
        buffer: int = 1024,
        on_live: Callable[[], object] | None = None,
        pace: Pacer | None = None,
    ) -> AsyncGenerator[AuditRecord, None]:
        """Every event after `after_sequence` in order, then live events as they are appended.

        The backlog is read from the database in chunks (off the event loop); then the
        iterator follows appends from any thread without gap or duplicate at the seam.
        Up to `buffer` live events wait for a slow consumer (one append batch always fits
        an empty queue); a batch that would take it past that cuts it off with
        errors.ResourceExhausted (the appender and other watchers never wait). Ends
        cleanly when the log is closed. Any number of watchers, on any event loops.
        `on_live` is called once, on the loop, when the backlog is read and appends are
        followed live (from then on a consumer that stops reading can be cut off).
        `pace`: asked for each backlog page before it is read (the events it can hold, up to
        the head), and refunded what the page did not hold; the re-read at the switch to live
        and live events are never paced. Leave early with `aclose()` (or let the generator be
        collected).
        """
        check_watch(after_sequence, buffer)
        w = self._fanout.register(asyncio.get_running_loop(), buffer)
        if w is None:  # closed
            return
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
                    head = self._head
                    paced = await page_reserved(pace, None if head is None else head.sequence, last, WATCH_CHUNK, live)
                    try:
                        chunk, more = await asyncio.to_thread(
                            self._select, "sequence > ?", (last,), WATCH_CHUNK, WATCH_CHUNK_BYTES
                        )
                    except AuditError:
                        if w.closed or self._closed:
                            return
                        raise
                    await page_paid(pace, paced, len(chunk), live)
                    for r in chunk:
                        if w.closed:
                            return
                        if w.dropped:
                            raise cut_off(w, last)
                        yield r
                        last = r.sequence
                    if len(chunk) < WATCH_CHUNK and not more:
                        break
                    del chunk  # a reader paused at a yield above holds one chunk, never the backlog
            while True:
                item = await w.next()
                if item is None:
                    if w.dropped:
                        raise cut_off(w, last)
                    return
                if item.sequence > last:
                    yield item
                    last = item.sequence
        finally:
            self._fanout.forget(w)

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """End every watcher cleanly and close the database; idempotent, callable from any thread."""
        with self._write_lock:
            if self._closed:
                return
            with self._readers_lock:
                self._closed = True
                readers, self._readers = self._readers, []
            self._fanout.close()
            self._conn.close()
        for conn in readers:
            conn.close()

