"""Writes to an etcd-backed fleet: admin edits from any sidecar and `store push`, one transaction each.

Owns the write transaction of the fleet store: the new document, its audit events and the
trail's new head, committed together only if `<prefix>/mapping` and the head are still at
the revisions the write read. A write that loses the race re-reads and is applied again on
the new document (an edit with its category's etag pinned to the one it first saw, so an
edit of a category someone else just changed is ABORTED, while edits of other categories
land); nothing is applied twice, because a commit whose answer was lost is recognised by
the head's hash before anything is retried. `FleetWriter.apply_edit` is the AdminService's
write port (as `PolicyWriter.apply_edit` for a file), and returns once the writing sidecar
serves the new policy. Must never publish a document before its transaction committed,
report success for a transaction that may not have committed, or write outside the prefix.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Final

from consent_core.edits import Create, Edit, EditResult, apply_edit
from consent_core.errors import Aborted, FailedPrecondition, MappingError, SidecarError, Unavailable
from consent_core.index import Index
from consent_core.mapping_file import MappingDocument, parse_mapping
from consent_core.model import ConsentMapping, category_etag

from consent_sidecar.audit import AuditAction, AuditRecord, NewEvent
from consent_sidecar.audit.etcd import EtcdTrail, TrailHead
from consent_sidecar.etcd.client import EtcdClient, EtcdUnavailable, KeyValue
from consent_sidecar.etcd.keys import Keys
from consent_sidecar.observe import logs
from consent_sidecar.store.etcd_source import EtcdSource, StoreRead, document_events, published_mapping
from consent_sidecar.store.policy import PolicyStore, Snapshot

__all__ = ["MAX_WRITE_TRIES", "FleetWriter", "PushResult", "push_document"]

MAX_WRITE_TRIES: Final = 64  # a write re-applied after lost races at most this often, then ABORTED

_log = logs.get_logger(__name__)


class PushResult:
    __slots__ = ("changed", "records", "revision")

    def __init__(self, revision: int, changed: bool, records: list[AuditRecord]) -> None:
        self.revision = revision
        self.changed = changed
        self.records = records


async def _commit(
    client: EtcdClient, trail: EtcdTrail, read: StoreRead, text: str, mapping: ConsentMapping,
    events: list[NewEvent], digest: str,
) -> tuple[int, list[AuditRecord]] | None:
    """The write transaction; (new revision, records) when committed, None when the store moved first.

    An answer lost on the way back (a timeout after etcd may have committed) is resolved by
    reading the head: our new head hash there means committed; anything else means not.
    """
    keys = trail.keys
    base = read.document.mod_revision if read.document is not None else 0
    records, ops, new_head = trail.change_ops(read.head, events, policy=digest, rejected="")
    ops.append(client.put(keys.mapping, text.encode("utf-8")))
    if digest != read.head.policy:
        ops.append(client.put(keys.policy, mapping.canonical_bytes()))
    compares = [client.compare_mod(keys.mapping, base), trail.compare(read.head)]
    try:
        result = await client.txn(compares, ops)
    except EtcdUnavailable as e:
        if not e.ambiguous:
            raise Unavailable(f"{e}; nothing changed") from None
        try:
            kv, _ = await client.get(keys.head)
        except EtcdUnavailable:
            raise Unavailable("etcd stopped answering while the write was committing: it may or may not have "
                              "been applied; read it back before retrying") from None  # fmt: skip
        now = TrailHead.decode(kv)
        if now.hash != new_head.hash:
            return None
        trail.log(records)
        return now.revision, records
    if not result.succeeded:
        return None
    trail.log(records)
    return result.revision, records


async def push_document(
    client: EtcdClient, trail: EtcdTrail, text: str, actor: str, *, expect_revision: int | None = None,
    source: str = "-",
) -> PushResult:
    """`store push`: the whole document, validated like `check`, with its events, in one transaction.

    MappingError when it is invalid (nothing written); FailedPrecondition when `expect_revision`
    is given and the document is no longer at it. Pushing the bytes already stored writes nothing.
    """
    mapping = await asyncio.to_thread(parse_mapping, text, source)
    digest = mapping.digest()
    data = text.encode("utf-8")
    for _ in range(MAX_WRITE_TRIES):
        read = await _read(client, trail.keys)
        current = read.document.mod_revision if read.document is not None else 0
        if expect_revision is not None and current != expect_revision:
            raise FailedPrecondition(f"the document is at revision {current}, not {expect_revision}: nothing written")
        if read.document is not None and read.document.value == data and not read.head.rejected:
            return PushResult(current, False, [])
        old = published_mapping(read.policy)
        if digest == read.head.policy and not read.head.rejected:
            events: list[NewEvent] = []  # comments or layout only: the policy is unchanged
        elif digest == read.head.policy:
            events = [NewEvent(actor, AuditAction.POLICY_RELOADED,
                               detail=f"digest {digest} unchanged, from revision {current}; clears the reload failure")]
        else:
            detail = f"digest {digest}, pushed over revision {current}"
            events = await asyncio.to_thread(document_events, old, mapping, actor, detail)
        committed = await _commit(client, trail, read, text, mapping, events, digest)
        if committed is not None:
            return PushResult(committed[0], True, committed[1])
        if expect_revision is not None:
            raise FailedPrecondition(f"the document moved past revision {expect_revision} meanwhile: nothing written")
    raise Aborted("too many concurrent writes to the fleet store; nothing written, retry")


async def _read(client: EtcdClient, keys: Keys) -> StoreRead:
    result = await client.txn([], [client.read(keys.mapping), client.read(keys.head), client.read(keys.policy)])
    doc, head, policy = (r[0] if r else None for r in result.ranges)
    return StoreRead(doc, TrailHead.decode(head), None if policy is None else policy.value.decode(), result.revision)


def _always() -> bool:
    return True


def _pin(edit: Edit, mapping: ConsentMapping) -> Edit:
    """`edit` with its category's current etag, so a retry on a newer document refuses a changed category."""
    if isinstance(edit, Create) or edit.etag:
        return edit
    category = mapping.category(edit.category_id)
    if category is None:
        return edit
    return replace(edit, etag=category_etag(category))


class FleetWriter:
    """The write port of an etcd-backed sidecar (AdminService's writer): edits commit to etcd, then serve here."""

    def __init__(self, source: EtcdSource) -> None:
        self._source = source
        self._inflight: set[asyncio.Future[tuple[EditResult, Snapshot]]] = set()

    @property
    def store(self) -> PolicyStore:
        return self._source.store

    @property
    def pending_events(self) -> int:
        return 0  # events are written with their change, in one transaction, or not at all

    async def aclose(self) -> None:
        """Waits for edits still committing (they run to completion even when their caller left)."""
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    async def apply_edit(
        self, edit: Edit, actor: str, *, alive: Callable[[], bool] = _always
    ) -> tuple[EditResult, Snapshot]:
        """One admin write: read -> edit (comments kept) -> one transaction -> serve; retried on lost races.

        `alive()` is asked before each transaction is sent: False (the caller's deadline passed, or
        it cancelled) stops the write there, changing nothing. Once sent, it runs to completion even
        if the caller is cancelled: a commit must be served here once made.
        """
        task = asyncio.ensure_future(self._apply(edit, actor, alive))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return await asyncio.shield(task)

    async def _apply(self, edit: Edit, actor: str, alive: Callable[[], bool]) -> tuple[EditResult, Snapshot]:
        source = self._source
        client, trail = source.client, source.trail
        async with source.lock:
            pinned = edit
            for _ in range(MAX_WRITE_TRIES):
                read = await source.read()
                kv = read.document
                if kv is None:
                    raise Aborted(f"no mapping document at {source.keys.prefix}/mapping: push one first (store push)")
                seen = time.monotonic()
                serving = source.document
                if serving is not None and serving.mod_revision == kv.mod_revision and not source.state.from_cache:
                    index: Index | None = source.store.current.index  # the document serving: compiled already
                    error: str | None = None
                else:
                    index, error = await asyncio.to_thread(source.parse, kv)
                if index is None:
                    raise Aborted(f"the fleet's mapping document is invalid, fix it first (store push): {error}")
                if index.digest != read.head.policy or read.head.rejected:
                    # Written around the sidecars and not audited yet: account for it first, then edit on it.
                    await source._apply_locked(kv, seen)
                    continue
                if kv.mod_revision > source.state.revision:
                    source.publish(kv, index, seen)  # audited already: serve it before building on it
                old = index.mapping
                if pinned is edit:  # the first document the edit meets fixes its category's etag for any retry
                    pinned = _pin(edit, old)
                result = apply_edit(old, pinned, source.store.mapping_limits)
                if not result.changed:
                    return result, source.store.current
                text, new_index = await asyncio.to_thread(_render, kv.value.decode("utf-8"), source, result)
                detail = f"digest {new_index.digest}, edited over revision {kv.mod_revision}"
                events = await asyncio.to_thread(
                    document_events, old, result.mapping, actor, detail, renamed=result.renamed
                )
                if not alive():
                    raise Unavailable("the call ended (deadline passed or cancelled) before the edit was committed; "
                                      "nothing changed")  # as the file writer words it
                committed = await _commit(client, trail, read, text, result.mapping, events, new_index.digest)
                if committed is None:
                    continue  # another write landed first: re-read, re-apply (etag pinned)
                revision, records = committed
                snap = source.publish(KeyValue(source.keys.mapping, text.encode("utf-8"), revision, kv.create_revision),
                                      new_index, seen)  # fmt: skip
                _log.info("admin edit committed", actor=actor, edit=type(edit).__name__.lower(),
                          category_id=result.category.id, store_revision=revision, audit_events=len(records),
                          policy_generation=source.store.current.generation)  # fmt: skip
                return result, snap or source.store.current
        raise Aborted("too many concurrent writes to the fleet store; nothing changed, retry")


def _render(text: str, source: EtcdSource, result: EditResult) -> tuple[str, Index]:
    """(blocking) The edited document text (comments kept) and its index; internal error if it would not re-read."""
    name = f"{source.keys.prefix}/mapping"
    try:
        limits = source.store.mapping_limits
        doc = MappingDocument.parse(text, name, limits)
        new_text = doc.with_mapping(result.mapping, result.renamed)
        reread = parse_mapping(new_text, name, limits)
    except (MappingError, RuntimeError, ValueError) as e:
        raise SidecarError(f"internal error: cannot write this edit into the mapping document: {e}") from e
    if reread != result.mapping:
        raise SidecarError("internal error: the edited document would not re-read as the edit; nothing written")
    return new_text, source.store.compile(result.mapping)
