"""The serving policy: one immutable `Snapshot` behind one atomic reference, and its single write path.

`PolicyStore` owns the current snapshot, its generation counter and the reload health counters.
Every change goes through `publish`, which swaps the reference and then tells the listeners
`(old, new)`. In the sidecar only `consent_sidecar.store.writer.PolicyWriter` publishes, and
only after the change's audit events are durable (it names the generation it expects);
`reload_from_file` / `reload_async` publish unaudited, for stores without a trail (tests,
embedding). Readers take `store.current` once per RPC and never see half a policy.
It must never raise for a bad mapping file on reload (the last good snapshot keeps serving),
never compile on the event loop when called from async code, never let the collector run a
full collection in the middle of a load (`collection`), and never log payloads.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from consent_core.errors import MappingError
from consent_core.index import DEFAULT_MEMO_BYTES, Index
from consent_core.index import compile as compile_index
from consent_core.limits import MappingLimits
from consent_core.mapping_file.reader import DEFAULT_MAX_MAPPING_BYTES
from consent_core.model import ConsentMapping

from consent_sidecar.store.collection import collection_paused

__all__ = ["Candidate", "Listener", "PolicyStore", "ReloadResult", "Snapshot"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One published policy: what a decision reads, and what it reports as PolicyVersion."""

    index: Index
    generation: int  # 1 for the first load; +1 on every published change
    digest: str  # sha256 hex of the canonical mapping (equal to index.digest)
    loaded_at: datetime  # UTC
    source: str  # the mapping file path as given on the command line


@dataclass(frozen=True, slots=True)
class Candidate:
    """A mapping file read and compiled but not yet published: `index`, or why it was rejected."""

    index: Index | None
    error: str | None = None  # formatted like ReloadResult.error
    exception: BaseException | None = None


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What one reload did. `ok` False = rejected; the previous snapshot keeps serving."""

    ok: bool
    snapshot: Snapshot | None  # the newly published snapshot; None when unchanged or rejected
    error: str | None = None  # the rejection, formatted (`file:line:column: path: message` lines)
    exception: BaseException | None = None  # for callers that log tracebacks of unexpected failures
    pending: bool = False  # its audit events could not be written: not served (or not recorded); retry

    @property
    def changed(self) -> bool:
        return self.snapshot is not None


Listener = Callable[[Snapshot | None, Snapshot], None]
"""Called after every publish with (old, new); old is None for the first load."""

Loader = Callable[[str], ConsentMapping]
"""Reads and validates a mapping file; raises MappingError (or OSError) when it cannot."""


def load_mapping_file(
    path: str, max_bytes: int = DEFAULT_MAX_MAPPING_BYTES, limits: MappingLimits | None = None
) -> ConsentMapping:
    """The default loader: consent_core.mapping_file, validated, positions in its errors; at most
    `max_bytes`, its size against `limits`."""
    # Imported here so the core (and tests with their own loader) never pull in the YAML stack.
    from consent_core.mapping_file import load_mapping

    return load_mapping(path, limits, max_bytes=max_bytes).mapping


def _utcnow() -> datetime:
    return datetime.now(UTC)


class PolicyStore:
    """Holds the serving snapshot; the one place that replaces it.

    Reads (`current`) are lock-free: a single attribute read is atomic. Writers serialise on a
    lock so generations are dense and listeners see publishes in order.
    """

    def __init__(
        self,
        *,
        loader: Loader | None = None,
        clock: Callable[[], datetime] = _utcnow,
        max_mapping_bytes: int = DEFAULT_MAX_MAPPING_BYTES,
        mapping_limits: MappingLimits | None = None,
        memo_bytes: int = DEFAULT_MEMO_BYTES,
    ) -> None:
        """loader: reads a mapping file (default: `load_mapping_file` with the limits below).
        max_mapping_bytes: the mapping file's size limit. mapping_limits: how large a mapping may
        be (default: the documented limits); every reader of the mapping through this store
        (reloads, admin writes) uses them. memo_bytes: each compiled snapshot's memo budget."""
        self.max_mapping_bytes = max_mapping_bytes
        self.mapping_limits = mapping_limits if mapping_limits is not None else MappingLimits()
        self.memo_bytes = memo_bytes
        limits = self.mapping_limits
        self._loader: Loader = loader or (lambda path: load_mapping_file(path, max_mapping_bytes, limits))
        self._clock = clock
        self._current: Snapshot | None = None
        self._source: str | None = None
        self._listeners: list[Listener] = []
        self._write_lock = threading.Lock()
        self.reloads = 0  # successful reloads from the file that published a change
        self.failed_reloads = 0
        self.last_error: str | None = None  # last rejected reload; cleared by the next good one
        self.last_error_at: datetime | None = None

    @property
    def current(self) -> Snapshot:
        """The serving snapshot. Read it once per RPC (per batch) and use that object throughout."""
        snap = self._current
        if snap is None:
            raise RuntimeError("no policy loaded yet: call load_initial first")
        return snap

    @property
    def loaded(self) -> bool:
        return self._current is not None

    @property
    def source(self) -> str | None:
        return self._source

    def add_listener(self, listener: Listener) -> None:
        """Registers a callback run after every publish, in publish order, on the publishing thread.

        Exceptions propagate to the publisher; the new snapshot is already live by then. Runs under
        the write lock (so listeners see publishes in order): a listener must not publish itself.
        """
        self._listeners.append(listener)

    def load_initial(self, path: str) -> Snapshot:
        """Loads, validates, compiles and publishes generation 1. Raises MappingError / OSError.

        Unlike reloads this raises: a sidecar that cannot load its first policy must not serve.
        """
        with collection_paused():
            index = self.compile(self._loader(path))
        self._source = path
        snap = self.publish(index)
        assert snap is not None  # the first publish always changes something
        return snap

    def compile(self, mapping: ConsentMapping) -> Index:
        """`mapping` compiled as this store's snapshots are (its memo budget)."""
        return compile_index(mapping, memo_bytes=self.memo_bytes)

    def publish(self, index: Index, *, source: str | None = None, generation: int | None = None) -> Snapshot | None:
        """Makes `index` the serving policy, unless its digest equals the current one.

        Returns the new snapshot, or None when nothing changed (an identical re-save, or a
        comment-only edit: the digest is over the canonical form). The single write path.
        `generation`: the generation the caller already recorded for this change (its audit
        events name it); RuntimeError, publishing nothing, if it would get another one.
        """
        with self._write_lock:
            old = self._current
            if old is not None and old.digest == index.digest:
                return None
            next_generation = 1 if old is None else old.generation + 1
            if generation is not None and generation != next_generation:
                raise RuntimeError(f"publish: expected generation {generation}, the next is {next_generation}")
            new = Snapshot(
                index=index,
                generation=next_generation,
                digest=index.digest,
                loaded_at=self._clock(),
                source=source or self._source or "",
            )
            self._current = new  # the atomic swap: readers see old or new, never a mix
            for listener in self._listeners:
                listener(old, new)
            return new

    def relabel(self, source: str) -> Snapshot:
        """The serving policy, now said to come from `source` (same index and generation: nothing changed).

        For a policy served from a cache file at start and then confirmed by its store.
        """
        with self._write_lock:
            current = self.current
            if current.source != source:
                current = self._current = replace(current, source=source)
            return current

    def reload_from_file(self) -> ReloadResult:
        """Re-reads the mapping file and publishes it if valid and changed; never raises for a bad file.

        Blocking (file I/O and compile): from async code use `reload_async`.
        """
        return self.commit_candidate(self.read_candidate())

    async def reload_async(self) -> ReloadResult:
        """`reload_from_file` with the load and compile in a worker thread, off the event loop.

        The publish (and so the listeners) runs back on the caller's loop thread.
        """
        return self.commit_candidate(await self.load_candidate())

    # The two halves of a reload, for callers that must look at the file between them (the
    # watcher re-checks it did not change while being read before committing what it read).

    async def load_candidate(self) -> Candidate:
        """Loads, validates and compiles the mapping file in a worker thread; publishes nothing."""
        return await asyncio.to_thread(self.read_candidate)

    def read_candidate(self) -> Candidate:
        """`load_candidate`, blocking, on the calling thread."""
        path = self._source
        if path is None:
            raise RuntimeError("no policy loaded yet: call load_initial first")
        try:
            with collection_paused():  # a full collection here would hold the loop thread too (collection.py)
                return Candidate(self.compile(self._loader(path)))
        except MappingError as e:
            return Candidate(None, e.format(), e)
        except OSError as e:
            return Candidate(None, f"{path}: cannot read: {e.strerror or e}", e)
        except Exception as e:  # a loader bug must not take the serving policy down with it
            return Candidate(None, f"{path}: internal error: {type(e).__name__}: {e}", e)

    def commit_candidate(self, candidate: Candidate) -> ReloadResult:
        """Publishes a good candidate (if changed) or records a rejected one; updates the counters. Unaudited."""
        if candidate.index is None:
            self.record_failure(candidate.error or "reload failed")
            return ReloadResult(ok=False, snapshot=None, error=candidate.error, exception=candidate.exception)
        snap = self.publish(candidate.index)
        self.record_loaded(published=snap is not None)
        return ReloadResult(ok=True, snapshot=snap)

    # The health counters, for whoever commits (commit_candidate here, the writer in the sidecar).

    def record_failure(self, error: str) -> None:
        """A reload that served nothing new: rejected, or not recordable in the audit trail (GetPolicyStatus)."""
        with self._write_lock:
            self.failed_reloads += 1
            self.last_error = error
            self.last_error_at = self._clock()

    def record_loaded(self, *, published: bool) -> None:
        """A good reload: clears the last error even when unchanged (e.g. a broken edit reverted)."""
        with self._write_lock:
            self.last_error = None
            self.last_error_at = None
            if published:
                self.reloads += 1
