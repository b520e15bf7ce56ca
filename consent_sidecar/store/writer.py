"""The single write path: every policy change goes through `PolicyWriter`, one at a time, audited first.

Hand edits (the watcher), SIGHUP and AdminService writes (`apply_edit`) all call this one
object. One asyncio.Lock serialises them end to end, so a reload never commits a file read
before an admin write landed and generations follow the trail's order. Every change is one
sequence, the same for each source of a policy:

    load (or edit and write the file) -> validate -> compose the audit events, naming the
    generation the change will get -> append them, strictly -> publish -> return

The append is durable before anything is published: no `Decide` ever sees a change the trail
does not hold, and a change whose events cannot be written is never served.

- Admin write (`apply_edit`, the steps in `admin_edit`): if the append fails the file is put
  back, nothing is published, the write fails (UNAVAILABLE, or INTERNAL if the file cannot be
  put back), and a caller that has gone (deadline, cancel) is not applied after the fact.
- Hand edit (`reload_if`): if the append fails the edit stays pending: not served,
  `GetPolicyStatus.last_error` shows the audit error, and the result says `pending` so the
  watcher retries (bounded backoff) until it is written, then served, audited once.
- Rejected reload: one POLICY_RELOAD_FAILED with the error text as detail; the same error
  again, back to back, is not written again (the trail records each distinct breakage once;
  `failed_reloads` counts every one). A good load of the serving content after a recorded
  failure writes one POLICY_RELOADED "unchanged ... clears the reload failure".
- Start (`start()`): one POLICY_RELOADED by `system`, before anything listens; when the file no
  longer holds the policy the trail last published, the changes found are itemised after it,
  in the same transaction, by the file's actor. Temp files of killed writes are removed first.

Every POLICY_RELOADED carries the policy it published, which the audit database keeps for the
next start to diff against. Each change's info log line names the audit head (sequence and
hash) after it. Must never block the event loop (loads, compiles, edits, diffs and SQLite run
in worker threads; only the publish, a reference swap, runs on the loop), never publish a
policy the store rejects or the trail lacks, never log mapping content. A second policy source
plugs in at `_commit`: hand it a candidate, it does the rest.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import Any

from consent_core.edits import Edit, EditResult
from consent_core.errors import SidecarError
from consent_core.model import ConsentMapping

from consent_sidecar.audit import AuditLog, AuditRecord, NewEvent
from consent_sidecar.observe import logs
from consent_sidecar.store.admin_edit import AdminEditor, FileIdentity, remove_stale_temp_files
from consent_sidecar.store.events import (
    SYSTEM_ACTOR,
    change_events,
    cleared_event,
    failed_event,
    file_actor,
    found_at_start,
    start_event,
    with_policy,
)
from consent_sidecar.store.policy import Candidate, PolicyStore, ReloadResult, Snapshot

__all__ = ["SYSTEM_ACTOR", "FileIdentity", "PolicyWriter", "file_actor"]

_log = logs.get_logger(__name__)


def _always() -> bool:
    return True


class PolicyWriter:
    """Serialises every change to the serving policy and writes its audit events before publishing it.

    Build it around a loaded `PolicyStore` and an open `AuditLog`; call `start()` once, before
    serving. Use from one event loop.
    """

    def __init__(self, store: PolicyStore, audit: AuditLog) -> None:
        if store.source is None:
            raise ValueError("PolicyWriter needs a store with its first policy loaded")
        self._store = store
        self._audit = audit
        self._lock = asyncio.Lock()
        self._inflight: set[asyncio.Future[Any]] = set()  # audit appends and admin edits still running
        self._editor = AdminEditor(store, self._append_policy)
        self._recorded_failure: str | None = None  # the reload error the trail holds, not yet cleared
        self._audit_error: str | None = None  # the last append failure, for `_pending`'s message
        self.file_actor = file_actor(store.source)

    @property
    def store(self) -> PolicyStore:
        return self._store

    @property
    def audit(self) -> AuditLog:
        return self._audit

    @property
    def own_write(self) -> FileIdentity | None:
        """The mapping file as the last admin write left it (the watcher recognises it)."""
        return self._editor.own_write

    # ------------------------------------------------------------------ start and close

    async def start(self) -> list[AuditRecord]:
        """Writes the start event (POLICY_RELOADED by `system`); raises if the audit log refuses it.

        When the trail's last published policy is stored and differs from the file's, the
        changes between them follow it, in the same transaction (see the module rules).
        A sidecar whose audit trail cannot record its start must not serve.
        """
        snap = self._store.current
        removed = await asyncio.to_thread(remove_stale_temp_files, snap.source)
        if removed:
            _log.warning("removed temp files of interrupted writes", files=removed, source=snap.source)
        async with self._lock:
            last = await asyncio.to_thread(self._audit.last_published_policy)
            found, note, problem = found_at_start(last, snap.index.mapping, snap.digest, self.file_actor)
            if problem:
                _log.error("the last published policy in the audit trail is unusable; not diffed at start",
                           digest=last.digest if last else None, error=problem)  # fmt: skip
            elif found:
                _log.warning("the mapping file changed while the sidecar was not running; audited at start",
                             category_changes=len(found))  # fmt: skip
            event = start_event(snap.generation, snap.digest, snap.source, note)
            return await self._append_policy([event, *found], snap.digest, snap.index.mapping)

    async def aclose(self) -> None:
        """Waits for audit appends and admin edits already running (call before closing the log)."""
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    # ------------------------------------------------------------------ file reloads

    async def reload(self, actor: str) -> ReloadResult:
        """Re-reads the mapping file (off the loop); audits, then publishes it if valid and changed.

        Never raises for a bad file or a refusing audit log: the last good policy keeps serving
        (see the module rules; `pending` in the result asks for a retry).
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
        and it is never published or audited a second time.
        """
        own = self.own_write
        store = self._store
        if own is None or store.last_error is not None or store.current.digest != own.digest:
            return False
        return await asyncio.to_thread(own.matches_file)

    async def _commit(self, candidate: Candidate, actor: str) -> ReloadResult:
        """Under the lock: audit a loaded candidate, then publish it (the module's sequence)."""
        store = self._store
        old = store.current
        if candidate.index is None:
            return await self._rejected(candidate, actor)
        index = candidate.index
        if index.digest == old.digest:
            if self._recorded_failure is not None:
                event = cleared_event(actor, old.generation, old.digest)
                if not await self._record([event], actor, old.digest, old.index.mapping):
                    return self._pending(actor)
                self._recorded_failure = None
            store.record_loaded(published=False)
            return ReloadResult(ok=True, snapshot=None)  # an identical re-save, or a comment: nothing to publish
        generation = old.generation + 1
        # The diff walks both mappings: a worker thread's work, like the load (the loop keeps deciding).
        events = await asyncio.to_thread(
            functools.partial(change_events, old.index.mapping, index.mapping, old_generation=old.generation,
                              generation=generation, digest=index.digest, actor=actor)
        )  # fmt: skip
        if not await self._record(events, actor, index.digest, index.mapping):
            return self._pending(actor)
        self._recorded_failure = None
        new = store.publish(index, generation=generation)
        store.record_loaded(published=new is not None)
        self._log_change("policy reloaded", actor, new, len(events))
        return ReloadResult(ok=True, snapshot=new)

    async def _rejected(self, candidate: Candidate, actor: str) -> ReloadResult:
        store = self._store
        error = candidate.error or "reload failed"
        store.record_failure(error)
        _log.warning(
            "policy reload rejected, last good policy keeps serving",
            actor=actor, policy_generation=store.current.generation, failed_reloads=store.failed_reloads,
            error=error,
        )  # fmt: skip
        result = ReloadResult(ok=False, snapshot=None, error=error, exception=candidate.exception)
        if error == self._recorded_failure:
            return result  # the same breakage again: already in the trail
        if not await self._record([failed_event(actor, error)], actor, None, None):
            # Nothing new is served; the failure is recorded when the retry finds it again.
            return ReloadResult(ok=False, snapshot=None, error=error, exception=candidate.exception, pending=True)
        self._recorded_failure = error
        return result

    def _pending(self, actor: str) -> ReloadResult:
        """A good edit whose events could not be written: not served, shown in the status, to be retried."""
        error = self._audit_error or "the audit log refused the events"
        message = (
            f"{self._store.current.source}: the edit is not served: its audit events could not be written "
            f"({error}); retrying"
        )
        self._store.record_failure(message)
        _log.error("edit not served: its audit events could not be written; retrying", actor=actor, error=error)
        return ReloadResult(ok=False, snapshot=None, error=message, pending=True)

    # ------------------------------------------------------------------ admin writes

    async def apply_edit(
        self, edit: Edit, actor: str, *, alive: Callable[[], bool] = _always
    ) -> tuple[EditResult, Snapshot]:
        """Applies one admin write end to end; returns once it is on disk, audited and live.

        The steps are `admin_edit`'s; the edit's result and the snapshot now serving are returned
        (unchanged when the edit changed nothing: then nothing is written, audited or published).
        `alive()` is asked before the file is written and before the events are appended: False
        (the caller's deadline passed, or it cancelled) stops the write there, changing nothing.
        The edit runs to completion, or to that check, even if the awaiting task is cancelled.
        """
        task = asyncio.ensure_future(self._locked_edit(edit, actor, alive))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return await asyncio.shield(task)

    async def _locked_edit(self, edit: Edit, actor: str, alive: Callable[[], bool]) -> tuple[EditResult, Snapshot]:
        async with self._lock:
            result, new = await self._editor.apply(edit, actor, alive)
            if result.changed:
                self._log_change("admin edit applied", actor, new, None, edit=type(edit).__name__.lower(),
                                 category_id=result.category.id)  # fmt: skip
            return result, new

    # ------------------------------------------------------------------ audit

    async def _record(
        self, events: Sequence[NewEvent], actor: str, digest: str | None, mapping: ConsentMapping | None
    ) -> bool:
        """`_append_policy`, but False (logged, kept in `_audit_error`) instead of raising when refused."""
        try:
            if digest is None or mapping is None:
                await self._append(lambda: list(events))
            else:
                await self._append_policy(events, digest, mapping)
        except (SidecarError, ValueError) as e:
            self._audit_error = str(e)
            _log.error("audit append failed", actor=actor, error=str(e), events=len(events))
            return False
        self._audit_error = None
        return True

    async def _append_policy(
        self, events: Sequence[NewEvent], digest: str, mapping: ConsentMapping
    ) -> list[AuditRecord]:
        """Appends `events`, the last POLICY_RELOADED carrying `mapping`; raises if the database refuses."""
        return await self._append(lambda: with_policy(events, digest, mapping))

    async def _append(self, build: Callable[[], list[NewEvent]]) -> list[AuditRecord]:
        """Appends what `build()` returns in one transaction in a worker thread (`build` runs there
        too: it may serialise a mapping); raises if the database refuses.

        Shielded: a cancelled caller leaves the append to finish (aclose waits for it), so an
        append's outcome is always known before anything depends on it.
        """
        audit = self._audit

        def write() -> list[AuditRecord]:
            return audit.append(build())

        future = asyncio.ensure_future(asyncio.to_thread(write))
        self._inflight.add(future)
        future.add_done_callback(self._inflight.discard)
        return await asyncio.shield(future)

    def _log_change(self, what: str, actor: str, new: Snapshot | None, events: int | None, **kw: Any) -> None:
        head = self._audit.head
        _log.info(
            what, actor=actor, policy_generation=None if new is None else new.generation,
            policy_digest=None if new is None else new.digest, audit_events=events,
            audit_head_sequence=None if head is None else head.sequence,
            audit_head_hash=None if head is None else head.hash, **kw,
        )  # fmt: skip
