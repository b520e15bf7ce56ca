"""The single write path: every policy change goes through `PolicyWriter`, one at a time, and is audited.

Hand edits (the watcher), SIGHUP and AdminService writes (`apply_edit`) all call this one
object. One asyncio.Lock serialises them end to end (load or edit -> compile
-> publish -> audit), so a reload can never commit a file read before an admin write
landed, generations follow the audit trail's order, and an RPC that returns has its
policy live and its events durable.

Audit rules (API.md §2; the contract is silent on the details decided here):

- At start: one POLICY_RELOADED by actor `system` (`start()`), before anything listens.
  If the file no longer holds the policy the trail last published (edited while the
  sidecar was not running, or an admin write that reached the file but not the trail
  before a crash), the `diff(last published, file)` events follow it, in the same
  transaction, by the file's actor `file:<basename>`, their detail saying they were found
  at start. Every POLICY_RELOADED carries the policy it published (`NewEvent.policy`), which
  the audit database keeps; a trail without one (from before this) is not diffed.
- A published change: in ONE audit transaction, the `diff(old, new)` events (category and
  mapping changes, actor as given) followed by one POLICY_RELOADED whose detail names the
  new generation and digest. A settings-only edit writes just the POLICY_RELOADED.
- A rejected reload: one POLICY_RELOAD_FAILED with the error text (`file:line:column:
  path: message` lines) as detail. The same error again, back to back (an editor saving
  the same broken file twice, SIGHUP on a still-broken file), is not written again: the
  trail records each distinct breakage once; `failed_reloads` still counts every one.
- A good load that publishes nothing (identical content) writes nothing, unless it clears
  a reload failure: then one POLICY_RELOADED "unchanged ... clears the reload failure", so
  every POLICY_RELOAD_FAILED in the trail is followed by the event that ended it.

For a file reload the file is the truth and is already live: if the audit append fails the
events are kept (bounded) and written ahead of the next append, and the failure is logged;
the reload itself stands. For an admin write (`apply_edit`) the caller is waiting and
nothing may be acknowledged half done: the file is re-read and must still describe the
serving policy (else ABORTED, so an operator's unpublished edit is never overwritten), the
edit is rendered into the file's own text (comments kept) and re-read as a check, written
atomically, published, and its events appended strictly; if that append fails the previous
file is restored and the previous policy re-published before the RPC fails, so file,
memory and trail always agree. The watcher then recognises the sidecar's own write
(`own_write`) and neither publishes nor audits it again. Must never block the event loop (loads, compiles and SQLite run
in worker threads), never publish a policy the store rejects, and never log mapping content.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, NoReturn

from consent_core.diff import diff
from consent_core.edits import Edit, EditResult, apply_edit
from consent_core.errors import Aborted, MappingError, SidecarError, Unavailable
from consent_core.index import Index
from consent_core.mapping_file import MappingDocument, atomic_write, load_mapping, parse_mapping
from consent_core.model import ConsentMapping

from consent_sidecar.audit import AuditAction, AuditLog, AuditRecord, NewEvent, changes_to_events
from consent_sidecar.observe import logs
from consent_sidecar.store.policy import Candidate, PolicyStore, ReloadResult, Snapshot

__all__ = ["MAX_PENDING_EVENTS", "SYSTEM_ACTOR", "FileIdentity", "PolicyWriter", "file_actor"]

SYSTEM_ACTOR: Final = "system"
MAX_PENDING_EVENTS: Final = 10_000  # audit events held while the database refuses appends

_log = logs.get_logger(__name__)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _file_sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """What the sidecar itself last wrote to the mapping file: its content hash and the policy digest."""

    path: str
    sha256: str  # of the bytes written
    digest: str  # the canonical mapping digest of that content

    @classmethod
    def of(cls, path: str, text: str, digest: str) -> FileIdentity:
        return cls(path, _sha256(text), digest)

    def matches_file(self) -> bool:
        """True while the file on disk still holds exactly these bytes (blocking: reads it)."""
        return _file_sha256(self.path) == self.sha256


def file_actor(path: str) -> str:
    """The audit actor of hand edits of the mapping file at `path`: `file:<basename>`."""
    return f"file:{os.path.basename(path)}"


class PolicyWriter:
    """Serialises every change to the serving policy and writes its audit events.

    Build it around a loaded `PolicyStore` and an open `AuditLog`; call `start()` once, before
    serving. Use from one event loop.
    """

    def __init__(self, store: PolicyStore, audit: AuditLog) -> None:
        if store.source is None:
            raise ValueError("PolicyWriter needs a store with its first policy loaded")
        self._store = store
        self._audit = audit
        self._lock = asyncio.Lock()
        self._pending: list[NewEvent] = []  # events a failed append could not write yet
        self._inflight: set[asyncio.Future[Any]] = set()  # audit appends and admin edits still running
        self.own_write: FileIdentity | None = None  # the mapping file as apply_edit last wrote it
        self.file_actor = file_actor(store.source)

    @property
    def store(self) -> PolicyStore:
        return self._store

    @property
    def audit(self) -> AuditLog:
        return self._audit

    @property
    def pending_events(self) -> int:
        """Audit events not yet written because the database refused them (0 when healthy)."""
        return len(self._pending)

    # ------------------------------------------------------------------ start and close

    async def start(self) -> list[AuditRecord]:
        """Writes the start event (POLICY_RELOADED by `system`); raises if the audit log refuses it.

        When the trail's last published policy is stored and differs from the file's, the
        changes between them follow it, in the same transaction (see the module rules): every
        start still opens with its POLICY_RELOADED, as API.md §2 says the trail does.
        A sidecar whose audit trail cannot record its start must not serve.
        """
        snap = self._store.current
        async with self._lock:
            found, note = await asyncio.to_thread(self._found_at_start, snap)
            event = NewEvent(
                actor=SYSTEM_ACTOR,
                action=AuditAction.POLICY_RELOADED,
                detail=f"{_version(snap)}; start, from {os.path.basename(snap.source)}{note}",
            )
            return await self._append([event, *found], strict=True, published=snap)

    def _found_at_start(self, snap: Snapshot) -> tuple[list[NewEvent], str]:
        """(blocking) The changes from the last published policy to the file's, and a note for the start event.

        Nothing when the trail stores no last policy, or it is the file's. A stored policy that
        does not rebuild to its digest is not diffed (logged; the start event says so).
        """
        last = self._audit.last_published_policy()
        if last is None or last.digest == snap.digest:
            return [], ""
        previous: ConsentMapping | None = None
        try:
            previous = ConsentMapping.from_json_dict(json.loads(last.canonical))
        except ValueError as e:
            problem = str(e)
        else:
            problem = "" if previous.digest() == last.digest else "it does not rebuild to its digest"
        if previous is None or problem:
            _log.error("the last published policy in the audit trail is unusable; not diffed at start",
                       sequence=last.sequence, digest=last.digest, error=problem)  # fmt: skip
            return [], (
                f"; differs from the last published policy (digest {last.digest}, event {last.sequence}), "
                f"which could not be read back ({problem}): changes since then are not itemised"
            )
        changes = diff(previous, snap.index.mapping)
        detail = (
            f"found at start: the mapping file differs from the last published policy (digest {last.digest}, "
            f"event {last.sequence}); changed while the sidecar was not running, or written just before it stopped"
        )
        events = [replace(e, detail=detail) for e in changes_to_events(changes, self.file_actor)]
        if events:
            _log.warning("the mapping file changed while the sidecar was not running; audited at start",
                         since_sequence=last.sequence, category_changes=len(events))  # fmt: skip
        return events, (
            f"; the file changed since the last published policy (digest {last.digest}, event {last.sequence}): "
            f"{len(changes)} category changes found at start"
        )

    async def aclose(self) -> None:
        """Waits for audit appends already handed to worker threads (call before closing the log)."""
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    # ------------------------------------------------------------------ file reloads

    async def reload(self, actor: str) -> ReloadResult:
        """Re-reads the mapping file (off the loop), publishes it if valid and changed, audits it.

        Never raises for a bad file: the last good policy keeps serving (see the module rules).
        """
        result = await self.reload_if(actor, None)
        assert result is not None  # no `accept` hook: always committed
        return result

    async def reload_if(self, actor: str, accept: Callable[[Candidate], bool] | None) -> ReloadResult | None:
        """`reload`, but `accept(candidate)` (run under the lock, right after the load) may refuse it.

        A refused candidate is neither published nor counted nor audited and None is returned:
        the watcher refuses a file that changed while it was read, or that failed to load while
        it may still be mid-write, and tries again later.
        """
        async with self._lock:
            if await self._unchanged_since_own_write():
                return ReloadResult(ok=True, snapshot=None)
            candidate = await self._store.load_candidate()
            if accept is not None and not accept(candidate):
                return None
            return await self._commit(candidate, actor)

    async def _unchanged_since_own_write(self) -> bool:
        """True when the file holds exactly what apply_edit last wrote and that is what serves.

        The watcher sees each admin write land; this recognises it without a load or compile,
        and it is never published or audited a second time (the digest check in the store
        would also publish nothing; this makes the rule explicit and cheap).
        """
        own = self.own_write
        store = self._store
        if own is None or store.last_error is not None or store.current.digest != own.digest:
            return False
        return await asyncio.to_thread(own.matches_file)

    async def _commit(self, candidate: Candidate, actor: str) -> ReloadResult:
        """Under the lock: commit a loaded candidate to the store and audit what happened."""
        store = self._store
        old = store.current
        previous_error = store.last_error
        result = store.commit_candidate(candidate)
        events: list[NewEvent]
        published: Snapshot | None = None
        if not result.ok:
            _log.warning(
                "policy reload rejected, last good policy keeps serving",
                actor=actor, policy_generation=old.generation, failed_reloads=store.failed_reloads,
                error=result.error,
            )
            if result.error == previous_error:
                return result  # the same breakage again: already in the trail
            events = [NewEvent(actor, AuditAction.POLICY_RELOAD_FAILED, detail=result.error or "reload failed")]
        elif result.snapshot is not None:
            events = self.change_events(old, result.snapshot, actor)
            published = result.snapshot
        elif previous_error is not None:
            events = [
                NewEvent(actor, AuditAction.POLICY_RELOADED,
                         detail=f"{_version(old)} unchanged; clears the reload failure"),
            ]
            published = old
        else:
            return result  # an identical re-save: nothing happened
        # No await between the commit above and handing the events to a thread: once the
        # policy is live its events are on their way, even if this task is cancelled now.
        await self._append(events, strict=False, published=published)
        return result

    # ------------------------------------------------------------------ admin writes

    async def apply_edit(self, edit: Edit, actor: str) -> tuple[EditResult, Snapshot]:
        """Applies one admin write end to end; returns once it is on disk, live and audited.

        Under the writer lock: re-read the mapping file and refuse (Aborted) unless it still
        describes the serving policy -> `consent_core.edits.apply_edit` -> render it into the file's
        own text (comments, key order, formatting of untouched parts kept) -> check the text
        re-reads as exactly the intended mapping -> compile -> `atomic_write` -> publish ->
        append the diff's events (actor = the principal id) in one transaction. Returns the
        edit's result and the snapshot now serving (unchanged when the edit changed nothing:
        then nothing is written, published or audited).

        Failures change nothing: anything before the write (a stale etag, a rule, a disk
        error: Unavailable) leaves file, memory and trail as they were. If the audit append
        fails after the file was replaced, the previous file content is restored atomically
        and the previous policy published again (a new generation with the old digest), then
        Unavailable is raised: file, memory and trail agree, without the edit. Should that
        restore fail too, the edit stays live in file and memory (they agree), its events are
        held and written ahead of the next append, and an internal error says so.

        The edit runs to completion even if the caller is cancelled (a client's deadline):
        a write half done would leave the file ahead of memory and the trail.
        """
        task = asyncio.ensure_future(self._apply_edit(edit, actor))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return await asyncio.shield(task)

    async def _apply_edit(self, edit: Edit, actor: str) -> tuple[EditResult, Snapshot]:
        async with self._lock:
            old = self._store.current
            doc = await asyncio.to_thread(self._read_document, old)
            result = apply_edit(doc.mapping, edit, self._store.mapping_limits)
            if not result.changed:
                return result, old
            text, index = await asyncio.to_thread(self._render, doc, result)
            await asyncio.to_thread(self._persist, doc.source, text, doc.text, index.digest)
            new = self._store.publish(index)
            if new is None:  # the digest changed, so this cannot happen; never claim an unpublished edit
                raise SidecarError("internal error: the edited policy was not published")
            events = self.change_events(old, new, actor, renamed=result.renamed)
            try:
                await self._append(events, strict=True, published=new)
            except (SidecarError, ValueError) as e:
                await self._undo(doc, old, new, events, e)
            _log.info(
                "admin edit applied", actor=actor, edit=type(edit).__name__.lower(),
                category_id=result.category.id, policy_generation=new.generation, audit_events=len(events),
            )
            return result, new

    def _read_document(self, serving: Snapshot) -> MappingDocument:
        """The mapping file as it is now, if it still describes the serving policy; Aborted otherwise.

        Compared by content (the canonical digest), not bytes: an operator's comment-only
        edit is kept and built upon, while an edit the watcher has not published yet (or a
        broken one, rejected) is never overwritten unseen.
        """
        path = serving.source
        try:
            loaded = load_mapping(path, self._store.mapping_limits)
        except MappingError as e:
            raise Aborted(
                "the mapping file changed on disk since it was loaded and does not load now; "
                f"fix it, then retry ({e.format()})"
            ) from None
        if loaded.mapping.digest() != serving.digest:
            raise Aborted("the mapping file changed on disk since it was loaded; retry")
        try:
            return MappingDocument.parse(loaded.text, loaded.source, self._store.mapping_limits)
        except MappingError as e:  # it just loaded: only a concurrent replace gets here
            raise Aborted(f"the mapping file changed on disk while it was read; retry ({e.format()})") from None

    def _render(self, doc: MappingDocument, result: EditResult) -> tuple[str, Index]:
        """The edited file text and its compiled index; an internal error if the text would not re-read exactly."""
        try:
            text = doc.with_mapping(result.mapping, result.renamed)
        except (MappingError, RuntimeError, ValueError) as e:
            raise SidecarError(f"internal error: cannot write this edit into the mapping file: {e}") from e
        # Defence in depth (with_mapping checks too): only the intended mapping may reach the disk.
        try:
            reread = parse_mapping(text, doc.source, self._store.mapping_limits)
        except MappingError as e:
            raise SidecarError(f"internal error: the edited mapping file would not load: {e}") from e
        if reread != result.mapping:
            raise SidecarError("internal error: the edited mapping file would not re-read as the edit; nothing written")
        return text, self._store.compile(result.mapping)

    def _persist(self, path: str, text: str, previous: str, digest: str) -> None:
        """atomic_write, remembering what we wrote; Unavailable (nothing changed) if the disk refuses."""
        try:
            atomic_write(path, text)
        except OSError as e:
            # atomic_write changes nothing on failure, except a directory fsync failing after
            # the rename: then put the previous content back (best effort) before failing.
            if _file_sha256(path) == _sha256(text):
                with contextlib.suppress(OSError):
                    atomic_write(path, previous)
            raise Unavailable(f"cannot write the mapping file {path}: {e.strerror or e}; nothing changed") from e
        self.own_write = FileIdentity.of(path, text, digest)

    async def _undo(
        self, doc: MappingDocument, old: Snapshot, new: Snapshot, events: list[NewEvent], error: Exception
    ) -> NoReturn:
        """The audit refused an applied edit: put file and policy back, so all three agree, and fail."""
        try:
            await asyncio.to_thread(atomic_write, doc.source, doc.text)
        except OSError as e:
            # The edit stands in file and memory; its events (and the policy it published) go with the next append.
            self._hold([*self._pending, *_with_policy(events, new)])
            _log.error(
                "admin edit applied but not audited, and could not be undone; events held for the next append",
                audit_error=str(error), restore_error=str(e), held=len(self._pending),
            )
            raise SidecarError(
                f"internal error: the edit is live but its audit events could not be written ({error}) and the "
                f"mapping file could not be restored ({e.strerror or e}); the events are held for the next append"
            ) from error
        self.own_write = FileIdentity.of(doc.source, doc.text, old.digest)
        self._store.publish(old.index)
        _log.error("admin edit undone: the audit log refused its events", error=str(error))
        raise Unavailable(
            f"cannot record the edit in the audit log ({error}); it was undone: the mapping file and the serving "
            "policy are as before"
        ) from error

    @staticmethod
    def change_events(
        old: Snapshot, new: Snapshot, actor: str, *, renamed: dict[str, str] | None = None
    ) -> list[NewEvent]:
        """The events of one published change: one per category/mapping change, then POLICY_RELOADED."""
        changes = diff(old.index.mapping, new.index.mapping, renamed=renamed)
        events = changes_to_events(changes, actor)
        events.append(
            NewEvent(
                actor,
                AuditAction.POLICY_RELOADED,
                detail=f"{_version(new)} (was generation {old.generation}; {len(changes)} category changes)",
            )
        )
        return events

    # ------------------------------------------------------------------ audit

    async def _append(
        self, events: Sequence[NewEvent], *, strict: bool, published: Snapshot | None = None
    ) -> list[AuditRecord]:
        """Appends `events` (after any held back) in one transaction, in a worker thread.

        `published`: the snapshot the last POLICY_RELOADED of `events` published; its canonical
        mapping (computed in the worker thread) rides on that event, for the next start to diff.
        strict: raise if the database refuses (the caller's change must fail); otherwise log,
        keep the events for the next append (up to MAX_PENDING_EVENTS) and return [].
        """
        held = list(self._pending)
        batch: list[NewEvent] = []

        def write() -> list[AuditRecord]:
            batch.extend([*held, *_with_policy(events, published)])
            return self._audit.append(batch)

        future = asyncio.ensure_future(asyncio.to_thread(write))
        self._inflight.add(future)
        future.add_done_callback(self._inflight.discard)
        try:
            # Shielded: a cancelled caller leaves the append to finish (aclose waits for it).
            records = await asyncio.shield(future)
        except (SidecarError, ValueError) as e:
            if strict:
                raise
            dropped = self._hold(batch or [*held, *events])
            _log.error(
                "audit append failed; events held for the next append",
                error=str(e), held=len(self._pending), dropped=dropped,
            )
            return []
        self._pending = []
        return records

    def _hold(self, batch: list[NewEvent]) -> int:
        """Keeps `batch` for the next append: the newest MAX_PENDING_EVENTS; returns how many were dropped.

        Only the newest policy-carrying event keeps its policy (the one a start diffs against):
        held events do not each pin a whole mapping in memory.
        """
        dropped = max(0, len(batch) - MAX_PENDING_EVENTS)
        kept = batch[dropped:]
        newest = max((i for i, e in enumerate(kept) if e.policy is not None), default=-1)
        self._pending = [e if e.policy is None or i == newest else replace(e, policy=None) for i, e in enumerate(kept)]
        return dropped


def _with_policy(events: Sequence[NewEvent], published: Snapshot | None) -> list[NewEvent]:
    """`events` with `published`'s policy on the last POLICY_RELOADED (blocking: serialises the mapping)."""
    out = list(events)
    if published is None:
        return out
    for i in range(len(out) - 1, -1, -1):
        if out[i].action is AuditAction.POLICY_RELOADED:
            canonical = published.index.mapping.canonical_bytes().decode("utf-8")
            out[i] = replace(out[i], policy=(published.digest, canonical))
            break
    return out


def _version(snap: Snapshot) -> str:
    return f"generation {snap.generation} digest {snap.digest}"
