"""Hot reload: watches the mapping file's directory and feeds changes to the one write path, `PolicyWriter`.

Watching the directory (not the file) sees every way a file gets replaced: in-place writes,
editor temp-and-rename, delete and re-create, and Kubernetes ConfigMap `..data` symlink swaps.
Bursts of changes coalesce into one reload that reads the latest content; a file still being
written (its size or mtime moving, or failing to parse while it moves) is retried, never
published. Never publishes or audits by itself: the writer loads, validates, audits and swaps
under its lock (so reloads and admin writes never interleave), with actor `file:<basename>`.

Change detection never relies on mtime and size alone: watchfiles' events (which, polling --
`WATCHFILES_FORCE_POLLING`, WSL, network filesystems -- compare mtimes) are backed by a
content check every `check_ms` (1 s): the file's (inode, size, mtime_ns) and sha256 of its
content (at most its size limit + 1 bytes), so an edit within the filesystem's mtime
granularity, at equal size, or given an older mtime is live (or rejected) within about two
seconds. Cost: one stat and one read + hash per second; 11.5 ms for a 16 MiB file (the
limit), microseconds for a usual one. The loops survive any error: logged, shown in the
status, and the watch goes on. An edit the audit log refuses stays pending and is retried
with backoff (0.5 s doubling to 30 s) until it is recorded and served.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

import structlog
from watchfiles import Change, awatch

from consent_sidecar.store.file_state import StatKey, content_hash, stat_key
from consent_sidecar.store.policy import Candidate, ReloadResult
from consent_sidecar.store.writer import PolicyWriter

__all__ = ["CHECK_MS", "DirectoryWatch", "MappingWatcher"]

log = structlog.get_logger("consent_sidecar.store.watch")

CHECK_MS: Final = 1000  # the content check's period
RETRY_FIRST: Final = 0.5  # seconds before the first retry of an edit the audit log refused; doubling ...
RETRY_MAX: Final = 30.0  # ... up to this

class DirectoryWatch:
    """The plumbing every hot-reloaded file shares: watch its directory, coalesce events, settle.

    Subclasses implement `reload_settled()`. Watching the directory (recursive=False) and
    filtering on the file's name plus Kubernetes' `..`-prefixed atomic-writer entries sees every
    way a file is replaced, while other files there (the audit database) never wake it.
    Tunables are in milliseconds.
    """

    def __init__(
        self,
        path: str,
        *,
        debounce_ms: int,
        step_ms: int,
        settle_ms: int,
        retry_ms: int,
        max_retries: int,
        force_polling: bool | None,
        what: str,
        max_bytes: int,
        check_ms: int = CHECK_MS,
    ) -> None:
        self._path = path
        p = Path(path)
        self._dir = str(p.parent.resolve() if str(p.parent) else Path.cwd())
        self._name = p.name
        self._debounce_ms = debounce_ms
        self._step_ms = step_ms
        self._settle = settle_ms / 1000
        self._retry = retry_ms / 1000
        self._max_retries = max_retries
        self._force_polling = force_polling
        self._what = what  # for log lines: "mapping", "principals"
        self._max_bytes = max_bytes  # the file's size limit: the content check hashes at most this + 1
        self._check = check_ms / 1000
        self._dirty = asyncio.Event()
        self._reloading = False
        # The file as the last reload was about to read it; first, as it is when the watcher is built
        # (right after the first load: an edit from then on is found, whatever its stat says).
        self._seen: tuple[StatKey, str | None] = (stat_key(path), content_hash(path, max_bytes))
        self.checks = 0  # content checks done (tests wait on it)
        self._unwatched = stat_key(path)  # the file as it was before the watch was armed
        self.watching = asyncio.Event()  # set once the directory watch is armed (tests wait on it)

    def request_reload(self) -> None:
        """Asks for a reload soon (coalesced with any pending one). Safe from signal handlers."""
        self._dirty.set()

    def _relevant(self, change: Change, path: str) -> bool:
        # The file itself, or Kubernetes' atomic-writer entries (..data, ..data_tmp, ..2024_...).
        name = os.path.basename(path)
        return name == self._name or name.startswith("..")

    async def run(self, stop: asyncio.Event) -> None:
        """Watches and reloads until `stop` is set."""
        tasks = [
            asyncio.create_task(self._watch(stop)),
            asyncio.create_task(self._reload_loop()),
            asyncio.create_task(self._content_check()),
        ]
        try:
            await stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t

    async def _watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                watcher = awatch(
                    self._dir, watch_filter=self._relevant, debounce=self._debounce_ms, step=self._step_ms,
                    stop_event=stop, recursive=False, force_polling=self._force_polling,
                    rust_timeout=500, yield_on_timeout=True,
                )
                async for changes in watcher:
                    if not self.watching.is_set():
                        self.watching.set()
                        if stat_key(self._path) != self._unwatched:
                            self._dirty.set()  # changed between the caller's load and the watch: catch up
                    if changes:
                        self._dirty.set()
            except Exception as e:  # the directory vanished (a remount), or anything else: go on
                log.warning("watch failed, retrying", file=self._what, error=str(e), directory=self._dir)
                await asyncio.sleep(1.0)

    def _observe(self) -> tuple[StatKey, str | None]:
        """(blocking) The file's (inode, size, mtime_ns) and content hash, now."""
        return stat_key(self._path), content_hash(self._path, self._max_bytes)

    async def _content_check(self) -> None:
        """The safety net: every `check_ms`, a reload if the file is not what the last reload read.

        Compared with the state recorded just before the last reload read the file (`_wait_settled`),
        not with the previous check: an edit watchfiles reported is not reloaded a second time.
        """
        while True:
            await asyncio.sleep(self._check)
            if self._reloading or self._dirty.is_set():
                continue  # a reload is due or running: it reads (and records) the file itself
            try:
                now = await asyncio.to_thread(self._observe)
            except Exception as e:  # a check that fails is tried again next period
                log.warning("content check failed", file=self._what, error=str(e))
                continue
            if now != self._seen and not (self._reloading or self._dirty.is_set()):
                log.info("change found by the content check", file=self._what, source=self._path)
                self._seen = now
                self._dirty.set()
            self.checks += 1

    async def _reload_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self._reload_once()

    async def _reload_once(self) -> object:
        """`reload_settled`, surviving any error: logged, reported through `reload_failed`, the watch goes on."""
        self._reloading = True
        try:
            return await self.reload_settled()
        except Exception as e:  # one bad reload must never end hot reload for good
            log.exception("reload failed unexpectedly; still watching", file=self._what, source=self._path)
            self.reload_failed(f"{self._path}: internal error while reloading: {type(e).__name__}: {e}")
            return None
        finally:
            self._reloading = False

    async def reload_settled(self) -> object:
        raise NotImplementedError

    def reload_failed(self, error: str) -> None:
        """An unexpected error in a reload: subclasses show it in their status."""

    async def _wait_settled(self, interval: float) -> StatKey:
        """Waits (bounded: 50 intervals) until the file's identity, size and mtime stop moving for
        `interval` seconds; returns the last stat, and records it with the content's hash as `_seen`
        (every reload calls this right before it reads)."""
        key = stat_key(self._path)
        for _ in range(50):
            await asyncio.sleep(interval)
            again = stat_key(self._path)
            if again == key:
                break
            key = again
        # What the reload about to read is: the content check compares the file with this.
        self._seen = (key, await asyncio.to_thread(content_hash, self._path, self._max_bytes))
        return key


class MappingWatcher(DirectoryWatch):
    """Reloads through `writer` whenever the mapping file changes, or on `request_reload()` (SIGHUP).

    Tunables are in milliseconds: `debounce_ms`/`step_ms` group filesystem events, `settle_ms`
    is how long the file must stay unchanged before it is read, `retry_ms` how long a file
    that fails to load while still changing is given before the failure counts.
    """

    def __init__(
        self,
        writer: PolicyWriter,
        path: str,
        *,
        debounce_ms: int = 200,
        step_ms: int = 20,
        settle_ms: int = 20,
        retry_ms: int = 150,
        max_retries: int = 5,
        force_polling: bool | None = None,
        check_ms: int = CHECK_MS,
        on_result: Callable[[ReloadResult], None] | None = None,
    ) -> None:
        super().__init__(
            path, debounce_ms=debounce_ms, step_ms=step_ms, settle_ms=settle_ms, retry_ms=retry_ms,
            max_retries=max_retries, force_polling=force_polling, what="mapping",
            max_bytes=writer.store.max_mapping_bytes, check_ms=check_ms,
        )  # fmt: skip
        self._writer = writer
        self._on_result = on_result
        self._backoff = RETRY_FIRST
        self._retry_timer: asyncio.TimerHandle | None = None

    async def _reload_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            result = await self._reload_once()
            if not isinstance(result, ReloadResult):
                continue
            self._schedule_retry(result.pending)
            if self._on_result is not None:
                try:
                    self._on_result(result)
                except Exception:  # an observer's bug must not stop the watch
                    log.exception("reload observer failed")

    def _schedule_retry(self, pending: bool) -> None:
        """An edit the audit log refused is retried with backoff; anything else resets it."""
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None
        if not pending:
            self._backoff = RETRY_FIRST
            return
        log.warning("edit pending: retrying its audit", retry_in_s=self._backoff, source=self._path)
        self._retry_timer = asyncio.get_running_loop().call_later(self._backoff, self._dirty.set)
        self._backoff = min(self._backoff * 2, RETRY_MAX)

    def reload_failed(self, error: str) -> None:
        self._writer.store.record_failure(error)

    async def reload_settled(self) -> ReloadResult:
        """One reload of a settled file; a load that fails while the file is still changing is retried.

        The writer loads under its lock and asks `accept` before committing: a read the file
        changed under is refused (torn), and so is a failed load while retries remain; after
        `retry_ms` a file still unchanged and failing is committed as a failed reload. Each torn
        read doubles the quiet time required before the next load (up to 4 x settle_ms): during
        an edit storm the watcher samples stats instead of parsing versions it must throw away,
        and loads the last one once the storm pauses.
        """
        attempt = 0
        torn_reads = 0
        while True:
            before = await self._wait_settled(self._settle * (1 << min(torn_reads, 2)))
            final = attempt >= self._max_retries
            torn = False

            def accept(candidate: Candidate, before: StatKey = before, final: bool = final) -> bool:
                nonlocal torn
                if stat_key(self._path) != before:
                    torn = True  # written to while we read it: whatever we read may be torn
                    return False
                return candidate.index is not None or final

            result = await self._writer.reload_if(self._writer.file_actor, accept)
            if result is not None:
                return result
            if torn:
                torn_reads += 1
                continue
            attempt += 1
            after = stat_key(self._path)
            await asyncio.sleep(self._retry)
            if stat_key(self._path) != after or self._dirty.is_set():
                self._dirty.clear()
                continue  # it was mid-write: the finished file decides
            attempt = self._max_retries  # unchanged and still failing: the next load counts
