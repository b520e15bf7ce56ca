"""The single write path: every policy change goes through `PolicyWriter`, one at a time, and is audited.

Hand edits (the watcher), SIGHUP and, with the admin-writes issue, AdminService writes all
call this one object. One asyncio.Lock serialises them end to end (load or edit -> compile
-> publish -> audit), so a reload can never commit a file read before an admin write
landed, generations follow the audit trail's order, and an RPC that returns has its
policy live and its events durable.

Audit rules (API.md §2; the contract is silent on the details decided here):

- At start: one POLICY_RELOADED by actor `system` (`start()`), before anything listens.
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
the reload itself stands. Must never block the event loop (loads, compiles and SQLite run
in worker threads), never publish a policy the store rejects, and never log mapping content.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from typing import Final

from sidecar import logs
from sidecar.audit import AuditLog, AuditRecord, NewEvent, changes_to_events
from sidecar.diff import AuditAction, diff
from sidecar.errors import SidecarError
from sidecar.policy import Candidate, PolicyStore, ReloadResult, Snapshot

__all__ = ["MAX_PENDING_EVENTS", "SYSTEM_ACTOR", "PolicyWriter", "file_actor"]

SYSTEM_ACTOR: Final = "system"
MAX_PENDING_EVENTS: Final = 10_000  # audit events held while the database refuses appends

_log = logs.get_logger(__name__)


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
        self._inflight: set[asyncio.Future[list[AuditRecord]]] = set()
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

        A sidecar whose audit trail cannot record its start must not serve.
        """
        snap = self._store.current
        event = NewEvent(
            actor=SYSTEM_ACTOR,
            action=AuditAction.POLICY_RELOADED,
            detail=f"{_version(snap)}; start, from {os.path.basename(snap.source)}",
        )
        async with self._lock:
            return await self._append([event], strict=True)

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
            candidate = await self._store.load_candidate()
            if accept is not None and not accept(candidate):
                return None
            return await self._commit(candidate, actor)

    async def _commit(self, candidate: Candidate, actor: str) -> ReloadResult:
        """Under the lock: commit a loaded candidate to the store and audit what happened."""
        store = self._store
        old = store.current
        previous_error = store.last_error
        result = store.commit_candidate(candidate)
        events: list[NewEvent]
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
        elif previous_error is not None:
            events = [
                NewEvent(actor, AuditAction.POLICY_RELOADED,
                         detail=f"{_version(old)} unchanged; clears the reload failure"),
            ]
        else:
            return result  # an identical re-save: nothing happened
        # No await between the commit above and handing the events to a thread: once the
        # policy is live its events are on their way, even if this task is cancelled now.
        await self._append(events, strict=False)
        return result

    # ------------------------------------------------------------------ admin writes
    #
    # Issue 4 adds `async def apply_edit(self, edit, actor) -> ...` here, under `self._lock`
    # like `reload_if`: re-read the file (sidecar.mapping_file.load_mapping, off the loop) so
    # a hand edit is never overwritten unseen -> apply the edit (sidecar.edits) -> persist
    # with mapping_file.atomic_write (off the loop) -> compile -> `self._store.publish(index)`
    # -> `await self._append(self.change_events(old, new, actor, renamed=...), strict=True)`,
    # returning only then (read-your-writes). The watcher then sees our own write, loads an
    # identical digest and publishes nothing.

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

    async def _append(self, events: Sequence[NewEvent], *, strict: bool) -> list[AuditRecord]:
        """Appends `events` (after any held back) in one transaction, in a worker thread.

        strict: raise if the database refuses (the caller's change must fail); otherwise log,
        keep the events for the next append (up to MAX_PENDING_EVENTS) and return [].
        """
        batch = [*self._pending, *events]
        future = asyncio.ensure_future(asyncio.to_thread(self._audit.append, batch))
        self._inflight.add(future)
        future.add_done_callback(self._inflight.discard)
        try:
            # Shielded: a cancelled caller leaves the append to finish (aclose waits for it).
            records = await asyncio.shield(future)
        except (SidecarError, ValueError) as e:
            if strict:
                raise
            dropped = max(0, len(batch) - MAX_PENDING_EVENTS)
            self._pending = batch[dropped:]
            _log.error(
                "audit append failed; events held for the next append",
                error=str(e), held=len(self._pending), dropped=dropped,
            )
            return []
        self._pending = []
        return records


def _version(snap: Snapshot) -> str:
    return f"generation {snap.generation} digest {snap.digest}"
