"""The etcd adapter of the policy source: follows `<prefix>/mapping` and publishes each valid revision.

Owns the read side of an etcd-backed sidecar: the first load (or the last-good cache file
while etcd cannot be reached), the watch on the document (re-read from scratch after a broken
stream or a compaction), the probe that tells connected from disconnected and restarts a watch
that fell silent, and `apply`: one revision -> validate -> audited? -> compile -> swap, through
the same `PolicyStore.publish` a file reload takes. A revision is served only once the shared
trail accounts for it (the head's `policy` digest, see `consent_sidecar.audit.etcd`); one
written around the sidecars (etcdctl, a raw client) is audited here first, by whichever sidecar
wins the transaction conditional on the head, actor `etcd:unattributed`; an invalid one is
recorded once (`POLICY_RELOAD_FAILED`, the head's `rejected` hash) and never served.
Writes are `etcd_writer`'s; they share this object's lock, so in one process revisions are
applied and edits committed one at a time, in revision order. Must never serve a document the
trail does not account for, block the event loop (parsing and compiling run in worker
threads), or log mapping content.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from consent_core.diff import diff
from consent_core.errors import MappingError, SidecarError
from consent_core.index import Index
from consent_core.index import compile as compile_index
from consent_core.mapping_file import atomic_write, parse_mapping
from consent_core.model import ConsentMapping

from consent_sidecar.audit import AuditAction, NewEvent, changes_to_events
from consent_sidecar.audit.etcd import EtcdTrail, TrailHead
from consent_sidecar.etcd.client import Compacted, EtcdClient, EtcdUnavailable, KeyValue
from consent_sidecar.etcd.keys import Keys
from consent_sidecar.observe import logs
from consent_sidecar.store.policy import PolicyStore, Snapshot

__all__ = ["UNATTRIBUTED", "EtcdSource", "FleetState", "StoreRead", "document_events", "published_mapping"]

UNATTRIBUTED: Final = "etcd:unattributed"  # the actor of documents written around the sidecars
MAX_APPLY_TRIES: Final = 20  # an unaudited revision raced by other auditors: re-read at most this often
PROBE_INTERVAL: Final = 1.0  # seconds between connectivity probes (a linearizable read)
CACHE_DELAY: Final = 0.5  # seconds a cache rewrite waits for later revisions (the cache is read at start only)
SILENT_WATCH_PROBES: Final = 2  # probes that see a newer document than served before the watch restarts

_log = logs.get_logger(__name__)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class FleetState:
    """What this sidecar knows of the store (PolicyStatus fields 10-13, fleet member records)."""

    connected: bool = False
    disconnected_since: datetime | None = None
    revision: int = 0  # the document revision serving (mod_revision of <prefix>/mapping), 0 = none yet
    latest: int = 0  # the newest document revision seen in etcd
    from_cache: bool = False  # serving the cache file read at start, not yet a revision from etcd
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class StoreRead:
    """One consistent read of the document and the trail's head (one etcd transaction)."""

    document: KeyValue | None
    head: TrailHead
    policy: str | None  # canonical JSON of the policy the trail last published
    revision: int  # the store revision of the read


def document_events(
    old: ConsentMapping | None, new: ConsentMapping, actor: str, detail: str, *, renamed: dict[str, str] | None = None
) -> list[NewEvent]:
    """The events of one document change: category and mapping changes, then POLICY_RELOADED `detail`."""
    changes = diff(old or ConsentMapping(), new, renamed=renamed)
    events = changes_to_events(changes, actor)
    events.append(NewEvent(actor, AuditAction.POLICY_RELOADED, detail=f"{detail}; {len(changes)} category changes"))
    return events


class EtcdSource:
    """An etcd-backed sidecar's policy source around its `PolicyStore`; build on the event loop."""

    def __init__(
        self,
        client: EtcdClient,
        trail: EtcdTrail,
        store: PolicyStore,
        *,
        cache: str | None = None,
        on_applied: Callable[[float], None] | None = None,
        on_state: Callable[[FleetState], None] | None = None,
    ) -> None:
        self.client = client
        self.trail = trail
        self.keys: Keys = trail.keys
        self.store = store
        self.cache = cache
        self.state = FleetState()
        self.lock = asyncio.Lock()  # applies and edits, one at a time, in revision order
        self.loaded = asyncio.Event()  # set once a policy serves (from etcd or the cache)
        self.source_name = f"etcd:{self.keys.prefix}/mapping"
        self.on_applied = on_applied  # seconds from seeing a revision to serving it (a metric)
        self.on_state = on_state  # the store state changed (metrics)
        self._restart = asyncio.Event()
        self._silent = 0
        self._processed = 0  # the newest document revision applied or rejected here
        self._cache_text: str | None = None
        self._cache_dirty = asyncio.Event()
        self._changed = asyncio.Event()  # state changed: member records refresh
        self.last_apply: float | None = None  # seconds the last applied revision took (metrics bound later see it)
        self.document: KeyValue | None = None  # the document serving (its text is what edits build on)
        self._head: TrailHead | None = None  # the trail's head as of the last watched revision

    # ------------------------------------------------------------------ state

    def _set_connected(self, connected: bool, error: str | None = None) -> None:
        st = self.state
        if connected and not st.connected:
            if st.disconnected_since is not None:
                _log.info("etcd reachable again", endpoint=self.client.endpoint)
            st.connected, st.disconnected_since = True, None
        elif not connected and (st.connected or st.disconnected_since is None):
            st.connected, st.disconnected_since = False, datetime.now(UTC)
            _log.warning("etcd unreachable: serving the last good policy", error=error)
        else:
            return
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        if self.on_state is not None:
            self.on_state(self.state)

    # ------------------------------------------------------------------ reading

    async def read(self) -> StoreRead:
        """The document, the head and the last published policy, read together (linearizable)."""
        k = self.keys
        result = await self.client.txn([], [self.client.read(k.mapping), self.client.read(k.head),
                                            self.client.read(k.policy)])  # fmt: skip
        doc, head, policy = (r[0] if r else None for r in result.ranges)
        canonical = None if policy is None else policy.value.decode()
        return StoreRead(doc, self.trail.note(TrailHead.decode(head)), canonical, result.revision)

    def parse(self, kv: KeyValue) -> tuple[Index | None, str | None]:
        """(blocking) The compiled document at `kv`, or why it cannot serve (naming its revision)."""
        limit = self.store.max_mapping_bytes
        if len(kv.value) > limit:  # the file's size limit holds for the fleet's document too
            return None, f"revision {kv.mod_revision}: the document is {len(kv.value)} bytes, more than {limit}"
        try:
            mapping = parse_mapping(kv.value.decode("utf-8"), f"{self.keys.prefix}/mapping", self.store.mapping_limits)
            return self.store.compile(mapping), None
        except UnicodeDecodeError as e:
            return None, f"revision {kv.mod_revision}: the document is not UTF-8 ({e.reason} at byte {e.start})"
        except MappingError as e:
            return None, f"revision {kv.mod_revision}: {e.format()}"
        except Exception as e:  # a parser bug must not take the serving policy down
            return None, f"revision {kv.mod_revision}: internal error: {type(e).__name__}: {e}"

    # ------------------------------------------------------------------ first load

    async def load_first(self) -> Snapshot:
        """Loads, audits if needed and publishes the current document. EtcdUnavailable while etcd is away;
        SidecarError when etcd holds no servable document (then wait for one: `run` keeps watching)."""
        read = await self.read()
        self._set_connected(True)
        if read.document is None:
            raise SidecarError(f"no mapping document at {self.keys.prefix}/mapping yet: "
                               "push one with `consent-sidecar store push FILE`")  # fmt: skip
        async with self.lock:
            await self._apply_locked(read.document, time.monotonic())
        if not self.store.loaded or self.state.from_cache:
            raise SidecarError(f"the mapping document cannot serve: {self.state.last_error}")
        return self.store.current

    def load_cache(self) -> Snapshot | None:
        """(blocking) The cache file as the serving policy, when etcd cannot be reached at start."""
        if self.cache is None:
            return None
        try:
            with open(self.cache, encoding="utf-8") as f:
                text = f.read()
            index = self.store.compile(parse_mapping(text, self.cache, self.store.mapping_limits))
        except (OSError, UnicodeDecodeError, MappingError) as e:
            _log.warning("the cache file cannot serve", cache=self.cache, error=str(e))
            return None
        self.state.from_cache = True
        self._cache_text = text
        snap = self.store.publish(index, source=f"cache:{self.cache}")
        self.loaded.set()
        _log.warning("etcd unreachable at start: serving the cache file", cache=self.cache)
        return snap

    # ------------------------------------------------------------------ applying revisions

    async def offer(
        self, kv: KeyValue | None, seen: float, *, deleted_at: int = 0, head: TrailHead | None = None,
        policy: KeyValue | None = None,
    ) -> None:
        """A document revision the watch delivered (None: the document was deleted at `deleted_at`).

        `head`: the trail's head as etcd held it at that revision, when the watch delivered it:
        a document the head accounts for is served without another read. `policy`: the
        canonical policy a writer's transaction stored with the document (same revision).
        """
        async with self.lock:
            if kv is None:
                self._processed = max(self._processed, deleted_at)
                self.state.latest = max(self.state.latest, deleted_at)
                self._reject(f"revision {deleted_at}: the mapping document was deleted; the last good policy serves")
                return
            await self._apply_locked(kv, seen, head, policy)

    async def _apply_locked(
        self, kv: KeyValue, seen: float, known: TrailHead | None = None, policy: KeyValue | None = None
    ) -> None:
        self._processed = max(self._processed, kv.mod_revision)  # served or rejected: the probe need not restart
        st = self.state
        st.latest = max(st.latest, kv.mod_revision)
        if kv.mod_revision <= st.revision and not st.from_cache:
            return  # already serving it (e.g. this sidecar's own write)
        if known is not None and policy is not None and policy.mod_revision == kv.mod_revision and not known.rejected:
            # A writer's transaction: the audited canonical policy came with the document. Build from it
            # (JSON, fast) rather than re-parsing the YAML; its digest proves it is the audited one.
            index = await asyncio.to_thread(_compiled_if, policy.value, known.policy, self.store.memo_bytes)
            if index is not None:
                self.publish(kv, index, seen)
                return
        index, error = await asyncio.to_thread(self.parse, kv)
        if index is not None and known is not None and index.digest == known.policy and not known.rejected:
            self.publish(kv, index, seen)  # the trail accounts for it as of this revision: no read needed
            return
        sha = sha256_hex(kv.value)
        for _ in range(MAX_APPLY_TRIES):
            read = await self.read()
            if read.document is None or read.document.mod_revision != kv.mod_revision:
                return  # a newer revision (or a delete) follows on the watch
            head = read.head
            if index is None:
                assert error is not None
                if head.rejected != sha and not await self._audit(kv, head, [
                    NewEvent(UNATTRIBUTED, AuditAction.POLICY_RELOAD_FAILED, detail=error)
                ], rejected=sha):  # fmt: skip
                    continue
                self._reject(error)
                return
            if index.digest == head.policy and not head.rejected:
                self.publish(kv, index, seen)  # the trail already accounts for it
                return
            if index.digest == head.policy:
                events = [NewEvent(UNATTRIBUTED, AuditAction.POLICY_RELOADED,
                                   detail=f"revision {kv.mod_revision} digest {index.digest} unchanged; "
                                          "clears the reload failure")]  # fmt: skip
            else:
                base = published_mapping(read.policy)
                detail = f"revision {kv.mod_revision} digest {index.digest}, written around the sidecars"
                events = await asyncio.to_thread(document_events, base, index.mapping, UNATTRIBUTED, detail)
            if await self._audit(kv, head, events, policy=index.digest, rejected="", mapping=index.mapping):
                self.publish(kv, index, seen)
                return
        _log.warning("could not audit a document revision: too much contention; retrying on the next one",
                     revision=kv.mod_revision)  # fmt: skip

    async def _audit(
        self, kv: KeyValue, head: TrailHead, events: list[NewEvent], *, policy: str | None = None,
        rejected: str | None = None, mapping: ConsentMapping | None = None,
    ) -> bool:
        """Appends `events` for the document at `kv`, if it and the head are unchanged; True when committed."""
        records, ops, _ = self.trail.change_ops(head, events, policy=policy, rejected=rejected)
        if mapping is not None and policy is not None:
            ops.append(self.client.put(self.keys.policy, mapping.canonical_bytes()))
        compares = [self.client.compare_mod(self.keys.mapping, kv.mod_revision), self.trail.compare(head)]
        try:
            result = await self.client.txn(compares, ops)
        except EtcdUnavailable as e:
            if not e.ambiguous:
                raise
            now = await self.trail.read_head()
            return bool(records) and now.hash == records[-1].hash
        if result.succeeded:
            self.trail.log(records)
        return result.succeeded

    def _reject(self, error: str) -> None:
        store = self.store
        if store.last_error != error:
            store.failed_reloads += 1
            _log.warning("document rejected, the last good policy keeps serving", error=error)
        store.last_error, store.last_error_at = error, datetime.now(UTC)
        self.state.last_error = error
        self._notify()

    def publish(self, kv: KeyValue, index: Index, seen: float) -> Snapshot | None:
        """Serves the audited document at `kv`: the one swap, then the cache and the member record follow."""
        store = self.store
        snap = store.publish(index, source=self.source_name)
        if snap is None and store.current.source != self.source_name:
            store.relabel(self.source_name)  # the cache's policy, now confirmed by etcd
        st = self.state
        st.revision = kv.mod_revision
        st.latest = max(st.latest, kv.mod_revision)
        st.from_cache = False
        st.last_error = None
        store.last_error = store.last_error_at = None
        if snap is not None:
            store.reloads += 1
        self.loaded.set()
        self.last_apply = time.monotonic() - seen
        if self.on_applied is not None:
            self.on_applied(self.last_apply)
        self.document = kv
        if self.cache is not None:
            self._cache_text = kv.value.decode("utf-8")
            self._cache_dirty.set()
        self._notify()
        return snap

    # ------------------------------------------------------------------ running

    async def run(self, stop: asyncio.Event) -> None:
        """Follows the document until `stop`: first load (retried), watch, probe, cache writes."""
        tasks = [asyncio.create_task(self._follow()), asyncio.create_task(self._probe())]
        if self.cache is not None:
            tasks.append(asyncio.create_task(self._write_cache()))
        try:
            await stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t

    async def _follow(self) -> None:
        backoff = 0.1
        while True:
            try:
                read = await self.read()
                self._set_connected(True)
                self._head = read.head
                if read.document is not None:
                    await self.offer(read.document, time.monotonic(), head=read.head)
                elif not self.loaded.is_set():
                    _log.warning("waiting for a mapping document", key=f"{self.keys.prefix}/mapping")
                watching = asyncio.create_task(self._watch(read.revision + 1))
                restart = asyncio.create_task(self._restart.wait())
                try:
                    await asyncio.wait((watching, restart), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    restart.cancel()
                    watching.cancel()
                    with contextlib.suppress(asyncio.CancelledError, EtcdUnavailable, Compacted):
                        await watching
                self._restart.clear()
                backoff = 0.1
            except Compacted:
                continue  # the watch fell behind a compaction: re-read the document, watch from there
            except EtcdUnavailable as e:
                self._set_connected(False, str(e))
                await asyncio.sleep(backoff)
                backoff = min(2.0, backoff * 2)

    async def _watch(self, start: int) -> None:
        """Follows the head, the last policy and the document: one watch over [head, mapping] (adjacent keys).

        A writer's transaction changes the document and the head in one revision, delivered in
        one batch: the head seen with (or before) a document revision is the head as of it.
        """
        k = self.keys
        async for batch in self.client.watch(k.head, k.mapping + b"\x00", start_revision=start):
            seen = time.monotonic()
            policy: KeyValue | None = None
            for deleted, kv in batch.events:
                if kv.key == k.head:
                    self._head = None if deleted else self.trail.note(TrailHead.decode(kv))
                elif kv.key == k.policy:
                    policy = None if deleted else kv
                elif kv.key != k.mapping:
                    continue
                elif deleted:
                    await self.offer(None, seen, deleted_at=kv.mod_revision)
                else:
                    await self.offer(kv, seen, head=self._head, policy=policy)

    async def _probe(self) -> None:
        """Every PROBE_INTERVAL: a linearizable read says connected or not, and catches a silent watch."""
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            try:
                kvs, _, _ = await self.client.range(self.keys.mapping, keys_only=True)
            except EtcdUnavailable as e:
                self._set_connected(False, str(e))
                continue
            self._set_connected(True)
            latest = kvs[0].mod_revision if kvs else 0
            if latest > self.state.latest:
                self.state.latest = latest
                self._notify()
            if latest > max(self.state.revision, self._processed) and not self.lock.locked():
                self._silent += 1
                if self._silent >= SILENT_WATCH_PROBES:
                    _log.info("the document moved but the watch said nothing: re-reading", revision=latest)
                    self._silent = 0
                    self._restart.set()
            else:
                self._silent = 0

    async def _write_cache(self) -> None:
        """Rewrites the cache file (atomically, mode 0600) after applied revisions; the latest wins."""
        assert self.cache is not None
        written: str | None = None
        while True:
            await self._cache_dirty.wait()
            await asyncio.sleep(CACHE_DELAY)  # coalesce bursts: one fsync for the latest of them
            self._cache_dirty.clear()
            text = self._cache_text
            if text is None or text == written:
                continue
            try:
                await asyncio.to_thread(_write_private, self.cache, text)
                written = text
            except OSError as e:
                _log.warning("cannot write the cache file", cache=self.cache, error=str(e))

    def changed(self) -> asyncio.Event:
        return self._changed


def _compiled_if(canonical: bytes, digest: str, memo_bytes: int) -> Index | None:
    """(blocking) The compiled policy of `canonical` if it is exactly the one of `digest`, else None."""
    if not digest or sha256_hex(canonical) != digest:
        return None
    mapping = published_mapping(canonical)
    if mapping is None:
        return None
    return compile_index(mapping, memo_bytes=memo_bytes) if mapping.digest() == digest else None


def published_mapping(canonical: str | bytes | None) -> ConsentMapping | None:
    """The mapping of a published policy's canonical JSON; None when there is none or it does not read."""
    if canonical is None:
        return None
    try:
        return ConsentMapping.from_json_dict(json.loads(canonical))
    except ValueError:
        return None


def _write_private(path: str, text: str) -> None:
    """The cache: its directory made if missing (0700), the file replaced atomically, mode 0600."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    atomic_write(path, text, mode=0o600)


def describe(snap: Snapshot, state: FleetState) -> dict[str, Any]:
    """A log line's worth of what serves and from where (no mapping content)."""
    return {"policy_generation": snap.generation, "policy_digest": snap.digest, "store_revision": state.revision}
