"""The tamper-evident audit trail in etcd: one trail per `--etcd-prefix`, shared by the whole fleet.

The second adapter of the audit interface the services use (`AuditLog` is the first, SQLite
beside a mapping file): `append`, `page`, `watch`, `head`, `verify`, `close`, with the same
records, canonical form and sha256 chain (`records`), gapless sequences from 1 and the first
`prev_hash` 64 zeros. Layout (`consent_sidecar.etcd.keys`): the events of one append in one
key or a few (a chunk: a JSON array of each event's canonical JSON plus its `hash`, at most
CHUNK_BYTES, keyed by its first sequence), so a change of many destinations stays within
etcd's limit of operations per transaction; and a head key (`TrailHead`) naming the last
sequence and hash and what the trail accounts for: the digest of the policy it last
published and the sha256 of a document it last rejected. Every append is one etcd transaction conditional on the
head's mod_revision, so concurrent appenders on any sidecar extend one chain, never fork it;
a document change puts its events in the transaction that writes the document
(`change_ops`, used by the policy source), so a policy is never live without its events.
`append`, `page`, `verify` and `last_published_policy` block (they are called from worker
threads, as AuditLog's are) and run on the owning event loop; `watch` is async and follows
the trail through one etcd watch per process, fanned out to bounded per-watcher queues.
Must never rewrite or delete an event, decide policy, or import generated consent.v1 code.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Coroutine, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import structlog
from consent_core import errors

from consent_sidecar.audit.anchor import Head
from consent_sidecar.audit.etcd_layout import (
    CHUNK_BYTES,
    TrailHead,
    chain,
    check_event,
    decode_chunk,
    decode_record,
    encode_chunks,
    encode_record,
)
from consent_sidecar.audit.pacing import Pacer, page_paid, page_reserved
from consent_sidecar.audit.paging import PageQuery
from consent_sidecar.audit.records import (
    GENESIS_HASH,
    AuditRecord,
    NewEvent,
    PublishedPolicy,
    check_new_event,
    log_fields,
)
from consent_sidecar.audit.verify import VerifyResult
from consent_sidecar.audit.watchers import Watcher, check_watch, cut_off
from consent_sidecar.etcd.client import Compacted, EtcdClient, EtcdUnavailable
from consent_sidecar.etcd.keys import Keys

__all__ = [
    "CHUNK_BYTES",
    "MAX_APPEND_TRIES",
    "EtcdTrail",
    "TrailHead",
    "decode_chunk",
    "decode_record",
    "encode_chunks",
    "encode_record",
]

SCAN_CHUNK: Final = 100  # chunk keys read per etcd range while paging, watching or verifying
MAX_APPEND_TRIES: Final = 50  # an append racing other sidecars' appends re-reads the head at most this often
_BRIDGE_TIMEOUT: Final = 30.0  # a blocking call from a worker thread waits this long for the loop's answer

_T = TypeVar("_T")
_log = structlog.get_logger("consent_sidecar.audit")


class EtcdTrail:
    """A fleet's audit trail in etcd, opened on the event loop that owns `client`."""

    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        *,
        clock: Callable[[], datetime] | None = None,
        logger: Any = None,
    ) -> None:
        self._client = client
        self._keys = keys
        self._clock = clock or (lambda: datetime.now(UTC))
        self._logger = logger if logger is not None else _log
        self._loop = asyncio.get_running_loop()
        self._watchers: set[Watcher] = set()
        self._follower: asyncio.Task[None] | None = None
        self._followed = 0  # the last sequence the follower delivered
        self._known = TrailHead()  # the newest head seen (`head`)
        self._closed = False

    @property
    def path(self) -> str:
        """Where the trail is, for log lines and messages."""
        return f"etcd:{self._keys.prefix}/audit"

    @property
    def keys(self) -> Keys:
        return self._keys

    def now(self) -> datetime:
        return self._clock()

    # ------------------------------------------------------------------ bridging

    def _blocking(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Runs `coro` on the trail's loop from a worker thread and waits for it (AuditLog's blocking API)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            coro.close()
            raise RuntimeError("EtcdTrail's blocking methods must be called from a worker thread (asyncio.to_thread)")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(_BRIDGE_TIMEOUT)
        except TimeoutError:
            future.cancel()
            raise EtcdUnavailable("etcd did not answer in time") from None

    # ------------------------------------------------------------------ head and appends

    async def read_head(self) -> TrailHead:
        kv, _ = await self._client.get(self._keys.head)
        return self.note(TrailHead.decode(kv))

    def note(self, head: TrailHead) -> TrailHead:
        """Remembers `head` as the newest known (the policy source reports every head it reads or watches)."""
        if head.sequence >= self._known.sequence:
            self._known = head
        return head

    @property
    def head(self) -> Head | None:
        """The newest event this sidecar has seen the trail reach; None while it knows of none. Never blocks:
        the source's watch keeps it current (GetPolicyStatus, the audit head metrics)."""
        known = self._known
        return None if known.sequence == 0 else Head(known.sequence, known.hash)

    def change_ops(
        self, head: TrailHead, events: Sequence[NewEvent], *, policy: str | None = None, rejected: str | None = None
    ) -> tuple[list[AuditRecord], list[Any], TrailHead]:
        """What appending `events` after `head` writes: (records, etcd put ops, new head).

        `policy` / `rejected` update what the head accounts for (None: unchanged). The caller puts
        the ops in its own transaction with `self.compare(head)` (and its document's compare).
        """
        records = chain(head, events, self._clock())
        last = records[-1] if records else None
        new = replace(
            head, sequence=last.sequence if last else head.sequence, hash=last.hash if last else head.hash,
            policy=head.policy if policy is None else policy, rejected=head.rejected if rejected is None else rejected,
        )
        ops = [self._client.put(self._keys.event(first), data) for first, data in encode_chunks(records)]
        ops.append(self._client.put(self._keys.head, new.encode()))
        return records, ops, new

    def compare(self, head: TrailHead) -> Any:
        """The transaction condition: the head is still `head` (no other append since)."""
        return self._client.compare_mod(self._keys.head, head.revision)

    async def append_async(self, entries: Sequence[NewEvent]) -> list[AuditRecord]:
        """Appends `entries` in one transaction, after whatever other sidecars append meanwhile."""
        if not entries:
            return []
        for i, e in enumerate(entries):
            check_new_event(i, e)
            if e.policy is not None:
                raise ValueError(f"entries[{i}].policy: only a document change publishes a policy in etcd")
        for _ in range(MAX_APPEND_TRIES):
            head = await self.read_head()
            records, ops, _ = self.change_ops(head, entries)
            result = await self._client.txn([self.compare(head)], ops)
            if result.succeeded:
                self.log(records)
                return records
        raise errors.Unavailable(f"audit trail {self.path}: too many concurrent appends; nothing written")

    def append(self, entries: Sequence[NewEvent]) -> list[AuditRecord]:
        """`append_async`, blocking (from a worker thread, as AuditLog.append is called)."""
        return self._blocking(self.append_async(entries))

    def log(self, records: Sequence[AuditRecord]) -> None:
        """One "audit" log line per committed event, as the SQLite trail writes (log shippers anchor on them)."""
        if records:
            self.note(replace(self._known, sequence=records[-1].sequence, hash=records[-1].hash))
        for r in records:
            with contextlib.suppress(Exception):
                self._logger.info("audit", **log_fields(r), trail=self.path)

    async def last_policy(self) -> PublishedPolicy | None:
        """The canonical policy the trail last published, if any (the base of unattributed diffs)."""
        head_kv, policy_kv = await asyncio.gather(
            self._client.get(self._keys.head), self._client.get(self._keys.policy)
        )
        head = TrailHead.decode(head_kv[0])
        kv = policy_kv[0]
        if kv is None or not head.policy:
            return None
        return PublishedPolicy(head.sequence, head.policy, kv.value.decode("utf-8"))

    def last_published_policy(self) -> PublishedPolicy | None:
        return self._blocking(self.last_policy())

    # ------------------------------------------------------------------ reading

    async def _after(self, sequence: int, limit: int) -> tuple[list[AuditRecord], int]:
        """Events after `sequence` in order (at least `limit` when there are), and the store revision of the read.

        The chunk holding `sequence + 1` may start before it: read it first (the last key at or
        below it), then the chunks after it.
        """
        k = self._keys
        first = k.event(sequence + 1)
        before, _, _ = await self._client.range(k.events, first + b"\x00", limit=1, descending=True)
        kvs, _, revision = await self._client.range(first + b"\x00", k.events_end, limit=limit)
        out = [r for kv in (*before, *kvs) for r in decode_chunk(kv.value) if r.sequence > sequence]
        return out, revision

    async def page_async(
        self, *, page_size: int = 0, page_token: str = "", category_id: str = "", action: int = 0,
        after_sequence: int = 0,
    ) -> tuple[list[AuditRecord], str]:
        """AuditLog.page's contract, over the etcd trail (filters applied while scanning in order)."""
        query = PageQuery.parse(page_size=page_size, page_token=page_token, category_id=category_id,
                                action=action, after_sequence=after_sequence)  # fmt: skip
        last = query.start
        found: list[AuditRecord] = []
        while len(found) <= query.size:
            chunk, _ = await self._after(last, SCAN_CHUNK)
            for r in chunk:
                if query.matches(r):
                    found.append(r)
                    if len(found) > query.size:
                        break
            if not chunk:
                break
            last = chunk[-1].sequence
        if len(found) <= query.size:
            return found, ""
        found = found[: query.size]
        return found, query.token_after(found[-1])

    def page(self, **kw: Any) -> tuple[list[AuditRecord], str]:
        """`page_async`, blocking (the services call it in a worker thread, as for AuditLog)."""
        return self._blocking(self.page_async(**kw))

    # ------------------------------------------------------------------ watching

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    def _forget(self, w: Watcher) -> None:
        self._watchers.discard(w)

    def _deliver(self, records: list[AuditRecord]) -> None:
        for w in list(self._watchers):
            w.deliver(records)

    async def _follow(self) -> None:
        """Delivers every new event to the watchers, in order, across reconnects and compactions."""
        self._followed = (await self._retrying(self.read_head)).sequence
        while not self._closed:
            try:
                # Catch up by reading (also after a broken watch or a compaction), then follow.
                while True:
                    chunk, revision = await self._after(self._followed, SCAN_CHUNK)
                    self._take(chunk)
                    if not chunk:
                        break
                async for batch in self._client.watch(self._keys.events, self._keys.events_end,
                                                      start_revision=revision + 1):  # fmt: skip
                    records = [r for deleted, kv in batch.events if not deleted for r in decode_chunk(kv.value)]
                    if records and records[0].sequence != self._followed + 1:
                        break  # a gap (should not happen): read it instead
                    self._take(records)
            except (EtcdUnavailable, Compacted) as e:
                _log.debug("audit trail follower reconnecting", error=str(e))
                await asyncio.sleep(0.5)
            except ValueError as e:
                _log.error("audit trail follower read an unreadable event; retrying", error=str(e))
                await asyncio.sleep(1.0)

    def _take(self, records: list[AuditRecord]) -> None:
        fresh = [r for r in records if r.sequence > self._followed]
        if fresh:
            self._followed = fresh[-1].sequence
            self.note(replace(self._known, sequence=fresh[-1].sequence, hash=fresh[-1].hash))
            self._deliver(fresh)

    async def _retrying(self, read: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
        while True:
            try:
                return await read()
            except EtcdUnavailable:
                await asyncio.sleep(0.5)

    async def watch(
        self,
        after_sequence: int,
        *,
        buffer: int = 1024,
        on_live: Callable[[], object] | None = None,
        pace: Pacer | None = None,
    ) -> AsyncGenerator[AuditRecord, None]:
        """AuditLog.watch's contract: the backlog after `after_sequence`, then live events, gapless.

        The backlog is read from etcd; live events come from this process's one follower of
        the trail. A consumer more than `buffer` events behind is cut off (ResourceExhausted).
        `pace` is asked before each page of history, as by AuditLog.watch.
        """
        check_watch(after_sequence, buffer)
        if self._closed:
            return
        w = Watcher(asyncio.get_running_loop(), buffer, self._forget)
        self._watchers.add(w)
        if self._follower is None or self._follower.done():
            self._follower = asyncio.create_task(self._follow())
        try:
            last = after_sequence
            # As AuditLog: read the backlog, go live, read once more; duplicates are skipped by sequence.
            for live in (False, True):
                w.live = live
                if live and on_live is not None:
                    on_live()
                while True:
                    head = self.head
                    paced = await page_reserved(pace, None if head is None else head.sequence, last, SCAN_CHUNK, live)
                    chunk, _ = await self._after(last, SCAN_CHUNK)
                    await page_paid(pace, paced, len(chunk), live)
                    for r in chunk:
                        if w.closed:
                            return
                        if w.dropped:
                            raise cut_off(w, last)
                        yield r
                        last = r.sequence
                    if not chunk:
                        break
            while True:
                item = await w.next()
                if item is None:
                    if w.dropped:
                        raise cut_off(w, last)
                    return
                if item.sequence <= last:
                    continue
                if item.sequence != last + 1:  # the follower skipped ahead of us: read the gap
                    chunk, _ = await self._after(last, SCAN_CHUNK)
                    for r in chunk:
                        if r.sequence >= item.sequence:
                            break
                        yield r
                        last = r.sequence
                yield item
                last = item.sequence
        finally:
            self._forget(w)

    # ------------------------------------------------------------------ verifying

    async def verify_async(self, expect_head: Head | None = None) -> VerifyResult:
        """Walks the whole trail, recomputing every hash and link, and checks the head names its end.

        `expect_head`: a head kept elsewhere (`--expect-head SEQ:HASH`): the trail must still hold
        that event with that hash, or it was cut or rewritten.
        """
        result = await self._walk()
        if result.ok and expect_head is not None:
            found, _ = await self._after(expect_head.sequence - 1, 1) if expect_head.sequence > 0 else ([], 0)
            event = next((r for r in found if r.sequence == expect_head.sequence), None)
            if event is None or event.hash != expect_head.hash:
                why = "is gone" if event is None else f"has hash {event.hash}"
                return VerifyResult(False, result.count, expect_head.sequence,
                                    f"the expected head {expect_head} {why}: the trail was cut or rewritten",
                                    "removed")  # fmt: skip
        return result

    async def _walk(self) -> VerifyResult:
        expected, prev = 1, GENESIS_HASH
        head = await self.read_head()
        start = self._keys.events
        while True:
            kvs, _, _ = await self._client.range(start, self._keys.events_end, limit=SCAN_CHUNK)
            for kv in kvs:
                if not kv.key.endswith(str(expected).zfill(20).encode()):
                    return VerifyResult(False, expected - 1, expected,
                                        f"event {expected} is missing (the next stored key is {kv.key.decode()!r}): "
                                        "events were removed", "removed")  # fmt: skip
                try:
                    records = decode_chunk(kv.value)
                except ValueError as e:
                    return VerifyResult(False, expected - 1, expected, f"event {expected} cannot be read: {e}",
                                        "unreadable")  # fmt: skip
                for r in records:
                    problem = check_event(r, expected, prev)
                    if problem is not None:
                        kind, reason = problem
                        return VerifyResult(False, expected - 1, expected, reason, kind)  # type: ignore[arg-type]
                    prev = r.hash
                    expected += 1
            if len(kvs) < SCAN_CHUNK:
                break
            start = kvs[-1].key + b"\x00"
        count = expected - 1
        if head.sequence != count or (count and head.hash != prev):
            return VerifyResult(False, count, count + 1,
                                f"the trail's head names event {head.sequence} ({head.hash}) but the trail ends at "
                                f"event {count}: events were removed from its end", "removed")  # fmt: skip
        return VerifyResult(True, count, last_hash=prev if count else "")

    def verify(self) -> VerifyResult:
        return self._blocking(self.verify_async())

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Ends every watcher and the follower; callable from the loop or another thread."""
        if self._closed:
            return
        self._closed = True

        def stop() -> None:
            for w in list(self._watchers):
                w.close()
            self._watchers.clear()
            if self._follower is not None:
                self._follower.cancel()

        if _on_loop(self._loop):
            stop()
        else:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(stop)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
