"""One admin write, step by step: the sequence `PolicyWriter.apply_edit` runs under its lock.

read the file (it must still describe the serving policy) -> apply the pure edit -> render it
into the file's own text (comments kept) and check it re-reads as the edit -> [the caller
still waiting?] -> write the file atomically -> [still waiting?] -> append the audit events,
strictly, naming the generation the change will get -> publish -> return.

The append is the point of no return: before it, any failure (a stale etag, a rule, a full
disk, a client that has gone) leaves file, memory and trail as they were (the file is put
back if it was already written); after it, the change is published, so what is served is
always already audited. Owns what the sidecar last wrote (`own_write`, so the watcher
recognises its own writes) and the removal of the temp files a killed write leaves behind.
Must never publish before the append commits, never overwrite an edit the watcher has not
published, never write a file the mapping reader would refuse, and never hold the event loop
for work that grows with the mapping: the edit's validation (which checks the whole mapping:
0.5 s of CPU for a create in a maximal one), the render and the diff into audit events run in
a worker thread, as the reads and writes do, with no full garbage collection midway
(`collection`); only the publish runs on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

from consent_core.edits import Edit, EditResult, apply_edit
from consent_core.errors import Aborted, InvalidArgument, MappingError, SidecarError, Unavailable
from consent_core.index import Index
from consent_core.mapping_file import MappingDocument, atomic_write, load_mapping, parse_mapping
from consent_core.model import ConsentMapping

from consent_sidecar.audit import AuditRecord, NewEvent
from consent_sidecar.observe import logs
from consent_sidecar.store.collection import collection_paused
from consent_sidecar.store.events import change_events
from consent_sidecar.store.file_state import content_hash
from consent_sidecar.store.policy import PolicyStore, Snapshot

__all__ = ["AdminEditor", "FileIdentity", "remove_stale_temp_files"]

RESTORE_ATTEMPTS: Final = 3

Append = Callable[[Sequence[NewEvent], str, ConsentMapping], Awaitable[list[AuditRecord]]]
"""The writer's strict append: (events, digest, mapping the last POLICY_RELOADED publishes); raises if refused."""

_log = logs.get_logger(__name__)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """What the sidecar itself last wrote to the mapping file: its content hash and the policy digest."""

    path: str
    sha256: str  # of the bytes written
    digest: str  # the canonical mapping digest of that content

    @classmethod
    def of(cls, path: str, text: str, digest: str) -> FileIdentity:
        return cls(path, _sha256(text.encode("utf-8")), digest)

    def matches_file(self) -> bool:
        """True while the file on disk still holds exactly these bytes (blocking: reads it)."""
        return content_hash(self.path) == self.sha256


def remove_stale_temp_files(path: str) -> list[str]:
    """Removes the temp files of writes killed before their rename (`.<name>.<8 chars>.tmp` beside `path`).

    Only `atomic_write`'s own pattern for this file, only regular files; returns the names removed.
    Call at start, before any write of this process can have one in flight.
    """
    directory = os.path.dirname(path) or "."
    pattern = re.compile(rf"\.{re.escape(os.path.basename(path))}\.[a-z0-9_]{{8}}\.tmp")
    removed: list[str] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(entry.name)
    return removed


class AdminEditor:
    """Runs admin writes for a `PolicyWriter` (which holds the lock around `apply`)."""

    def __init__(self, store: PolicyStore, append: Append) -> None:
        self._store = store
        self._append = append
        self.own_write: FileIdentity | None = None  # the mapping file as the last admin write left it

    async def apply(self, edit: Edit, actor: str, alive: Callable[[], bool]) -> tuple[EditResult, Snapshot]:
        """The sequence of the module docstring; the caller holds the writer's lock."""
        store = self._store
        old = store.current
        doc = await asyncio.to_thread(self._read_document, old)
        result, prepared = await asyncio.to_thread(self._prepare, doc, old, edit, actor)
        if prepared is None:
            return result, old
        text, index, events = prepared
        _check_alive(alive, "written")
        await asyncio.to_thread(self._persist, doc.source, text, doc.text, index.digest)
        generation = old.generation + 1
        try:
            _check_alive(alive, "recorded")
            await self._append(events, index.digest, result.mapping)
        except (SidecarError, ValueError) as e:
            await self._undo(doc, old, e)
        new = store.publish(index, generation=generation)
        if new is None:  # the digest changed, so this cannot happen; never claim an unpublished edit
            raise SidecarError("internal error: the edited policy was not published")
        return result, new

    def _read_document(self, serving: Snapshot) -> MappingDocument:
        """The mapping file as it is now, if it still describes the serving policy; Aborted otherwise.

        Compared by content (the canonical digest), not bytes: an operator's comment-only
        edit is kept and built upon, while an edit the watcher has not published yet (or a
        broken one, rejected) is never overwritten unseen.
        """
        with collection_paused():  # the reads build millions of objects: no full collection midway (collection.py)
            return self._read_document_now(serving)

    def _read_document_now(self, serving: Snapshot) -> MappingDocument:
        path = serving.source
        try:
            loaded = load_mapping(path, self._store.mapping_limits, max_bytes=self._store.max_mapping_bytes)
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

    def _prepare(
        self, doc: MappingDocument, old: Snapshot, edit: Edit, actor: str
    ) -> tuple[EditResult, tuple[str, Index, list[NewEvent]] | None]:
        """(blocking: in a worker thread) The edit applied and validated; if it changed anything, the
        file text, its compiled index and the audit events naming the generation it will get."""
        with collection_paused():  # the render re-reads the whole file (collection.py)
            return self._prepare_now(doc, old, edit, actor)

    def _prepare_now(
        self, doc: MappingDocument, old: Snapshot, edit: Edit, actor: str
    ) -> tuple[EditResult, tuple[str, Index, list[NewEvent]] | None]:
        result = apply_edit(doc.mapping, edit, self._store.mapping_limits)
        if not result.changed:
            return result, None
        text, index = self._render(doc, result)
        events = change_events(
            old.index.mapping, result.mapping, old_generation=old.generation, generation=old.generation + 1,
            digest=index.digest, actor=actor, renamed=result.renamed,
        )  # fmt: skip
        return result, (text, index, events)

    def _render(self, doc: MappingDocument, result: EditResult) -> tuple[str, Index]:
        """The edited file text and its compiled index; an error if the text would not re-read exactly."""
        try:
            text = doc.with_mapping(result.mapping, result.renamed)
        except (MappingError, RuntimeError, ValueError) as e:
            raise SidecarError(f"internal error: cannot write this edit into the mapping file: {e}") from e
        size = len(text.encode("utf-8"))
        limit = self._store.max_mapping_bytes
        if size > limit:  # the reader would refuse the file at the next reload or start
            raise InvalidArgument(
                "category", f"the edited mapping file would be {size:,} bytes, over the limit of {limit:,} bytes "
                "(--max-mapping-bytes); nothing written"
            )  # fmt: skip
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
            if content_hash(path) == _sha256(text.encode("utf-8")):
                with contextlib.suppress(OSError):
                    atomic_write(path, previous)
            raise Unavailable(f"cannot write the mapping file {path}: {e.strerror or e}; nothing changed") from e
        self.own_write = FileIdentity.of(path, text, digest)

    async def _undo(self, doc: MappingDocument, old: Snapshot, error: Exception) -> None:
        """The change cannot be recorded (or its caller left): put the file back, publish nothing, fail."""
        restore_error = await asyncio.to_thread(_restore, doc.source, doc.text)
        if restore_error is not None:
            # Nothing was published, so nothing unaudited is served; but the file holds the edit. The
            # watcher sees a hand edit it has not published and serves it only once it is audited.
            self.own_write = None
            _log.error("admin edit not recorded, and the mapping file could not be restored",
                       audit_error=str(error), restore_error=restore_error)  # fmt: skip
            raise SidecarError(
                f"internal error: the edit could not be recorded ({error}) and the mapping file could not be "
                f"restored ({restore_error}); the edit is not served, but the file holds it: it will be served "
                "as a hand edit once the audit log accepts its events, unless the file is fixed first"
            ) from error
        self.own_write = FileIdentity.of(doc.source, doc.text, old.digest)
        if isinstance(error, _Gone):
            _log.warning("admin edit abandoned: its caller went away before it was recorded; file restored")
            raise error
        _log.error("admin edit refused: the audit log refused its events; file restored", error=str(error))
        raise Unavailable(
            f"cannot record the edit in the audit log ({error}); it was not applied: the mapping file and the "
            "serving policy are as before"
        ) from error


class _Gone(Unavailable):
    """The caller's deadline passed or it cancelled: the write is not applied."""


def _check_alive(alive: Callable[[], bool], step: str) -> None:
    if not alive():
        raise _Gone(f"the call ended (deadline passed or cancelled) before the edit was {step}; nothing changed")


def _restore(path: str, text: str) -> str | None:
    """Puts `text` back into the file (a few attempts); None when done, else the last error."""
    error = ""
    for _ in range(RESTORE_ATTEMPTS):
        try:
            atomic_write(path, text)
            return None
        except OSError as e:
            error = e.strerror or str(e)
    return error
