"""Hot reload: every way an operator or a platform replaces the mapping file is seen and published once."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from consent_sidecar.audit import AuditLog
from consent_sidecar.store.policy import PolicyStore, ReloadResult
from consent_sidecar.store.watch import MappingWatcher
from consent_sidecar.store.writer import PolicyWriter

BASE = """\
version: 1
categories:
  - id: C0002
    name: Performance Cookies
    destinations: [amplitude]
"""


def mapping_with(*destinations: str) -> str:
    return BASE.replace("[amplitude]", "[" + ", ".join(destinations) + "]")


class Harness:
    def __init__(self, store: PolicyStore, watcher: MappingWatcher, path: Path) -> None:
        self.store = store
        self.watcher = watcher
        self.path = path
        self.results: list[ReloadResult] = []
        self.changed = asyncio.Condition()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async def check() -> None:
            async with self.changed:
                await self.changed.wait_for(predicate)

        await asyncio.wait_for(check(), timeout)

    def destinations(self) -> tuple[str, ...]:
        return self.store.current.index.known_destinations


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    path = tmp_path / "mappings.yaml"
    path.write_text(BASE)
    store = PolicyStore()
    store.load_initial(str(path))
    audit = AuditLog.open(tmp_path / "consent-sidecar-audit.db")  # in the watched directory, as by default
    h: Harness

    def on_result(result: ReloadResult) -> None:
        h.results.append(result)

        async def notify() -> None:
            async with h.changed:
                h.changed.notify_all()

        asyncio.get_running_loop().create_task(notify())

    watcher = MappingWatcher(PolicyWriter(store, audit), str(path), debounce_ms=50, step_ms=10, settle_ms=10,
                             retry_ms=50, on_result=on_result)
    h = Harness(store, watcher, path)
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    await asyncio.wait_for(watcher.watching.wait(), 10)
    yield h
    stop.set()
    await asyncio.wait_for(task, 10)
    audit.close()


async def test_in_place_write_is_published(harness: Harness) -> None:
    harness.path.write_text(mapping_with("amplitude", "mixpanel"))
    await harness.wait_for(lambda: harness.destinations() == ("amplitude", "mixpanel"))
    assert harness.store.current.generation == 2


async def test_editor_temp_and_rename_is_published(harness: Harness) -> None:
    tmp = harness.path.with_name(".mappings.yaml.swp")
    tmp.write_text(mapping_with("heap"))
    os.replace(tmp, harness.path)
    await harness.wait_for(lambda: harness.destinations() == ("heap",))


async def test_delete_keeps_last_policy_and_recreate_is_published(harness: Harness) -> None:
    harness.path.unlink()
    await harness.wait_for(lambda: harness.store.failed_reloads >= 1)
    assert harness.destinations() == ("amplitude",)
    assert harness.store.last_error and "mappings.yaml" in harness.store.last_error
    harness.path.write_text(mapping_with("braze"))
    await harness.wait_for(lambda: harness.destinations() == ("braze",))
    assert harness.store.last_error is None


async def test_kubernetes_configmap_symlink_swap_is_published(tmp_path: Path) -> None:
    # The kubelet's atomic writer: mappings.yaml -> ..data/mappings.yaml, ..data -> ..<timestamp>/
    d = tmp_path / "cm"
    d.mkdir()
    (d / "..2026_01").mkdir()
    (d / "..2026_01" / "mappings.yaml").write_text(BASE)
    os.symlink("..2026_01", d / "..data")
    os.symlink("..data/mappings.yaml", d / "mappings.yaml")
    store = PolicyStore()
    store.load_initial(str(d / "mappings.yaml"))
    audit = AuditLog.open(tmp_path / "audit.db")  # a ConfigMap mount is read-only: the audit db lives elsewhere
    done = asyncio.Event()
    watcher = MappingWatcher(PolicyWriter(store, audit), str(d / "mappings.yaml"), debounce_ms=50, step_ms=10,
                             settle_ms=10, on_result=lambda r: done.set() if r.changed else None)
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    try:
        await asyncio.wait_for(watcher.watching.wait(), 10)
        (d / "..2026_02").mkdir()
        (d / "..2026_02" / "mappings.yaml").write_text(mapping_with("tiktok-ads"))
        os.symlink("..2026_02", d / "..data_tmp")
        os.replace(d / "..data_tmp", d / "..data")
        await asyncio.wait_for(done.wait(), 10)
        assert store.current.index.known_destinations == ("tiktok-ads",)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        audit.close()


async def test_invalid_edit_keeps_serving_and_reports_position(harness: Harness) -> None:
    harness.path.write_text(BASE.replace("id: C0002", "id: 2C"))
    await harness.wait_for(lambda: harness.store.failed_reloads >= 1)
    assert harness.destinations() == ("amplitude",)
    assert harness.store.current.generation == 1
    assert harness.store.last_error is not None
    assert "mappings.yaml:3:9: categories[0].id: must not start with a digit" in harness.store.last_error
    harness.path.write_text(mapping_with("amplitude", "heap"))
    await harness.wait_for(lambda: harness.destinations() == ("amplitude", "heap"))
    assert harness.store.last_error is None


async def test_identical_resave_publishes_nothing(harness: Harness) -> None:
    harness.path.write_text("# a comment only edit\n" + BASE)
    await harness.wait_for(lambda: len(harness.results) >= 1)
    assert harness.results[-1].ok and not harness.results[-1].changed
    assert harness.store.current.generation == 1


async def test_truncated_write_is_retried_not_published(harness: Harness) -> None:
    full = mapping_with("amplitude", "mixpanel", "heap")
    # A slow in-place writer: the first half (broken YAML) sits on disk for a while.
    with open(harness.path, "w") as f:
        f.write(full[: len(full) - 12])
        f.flush()
        await asyncio.sleep(0.03)
        f.write(full[len(full) - 12 :])
    await harness.wait_for(lambda: harness.destinations() == ("amplitude", "heap", "mixpanel"))
    assert harness.store.failed_reloads == 0
    assert harness.store.current.generation == 2


async def test_request_reload_rereads_the_file(harness: Harness) -> None:
    # SIGHUP's path: a reload even when no filesystem event was seen.
    harness.watcher.request_reload()
    await harness.wait_for(lambda: len(harness.results) >= 1)
    assert harness.results[0].ok


async def test_unrelated_files_in_the_directory_are_ignored(harness: Harness) -> None:
    (harness.path.parent / "audit.db").write_bytes(b"x" * 100)
    harness.watcher.request_reload()  # a marker: the only result must be this one
    await harness.wait_for(lambda: len(harness.results) >= 1)
    await asyncio.sleep(0)
    assert len(harness.results) == 1


async def test_edit_storm_ends_on_the_last_content(harness: Harness) -> None:
    for i in range(200):
        tmp = harness.path.with_name(f".edit{i}")
        tmp.write_text(mapping_with("amplitude", f"dest-{i}"))
        os.replace(tmp, harness.path)
        if i % 20 == 0:
            await asyncio.sleep(0)
    await harness.wait_for(lambda: harness.destinations() == ("amplitude", "dest-199"))
    gens = [r.snapshot.generation for r in harness.results if r.snapshot is not None]
    assert gens == sorted(gens) and len(set(gens)) == len(gens)


async def test_an_unexpected_error_in_a_reload_is_reported_and_the_watch_goes_on(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = harness.watcher._writer
    real = writer.reload_if
    calls = 0

    async def failing_once(actor: str, accept: Callable[..., bool] | None) -> ReloadResult | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise MemoryError("injected: a reload ran out of memory")
        return await real(actor, accept)

    monkeypatch.setattr(writer, "reload_if", failing_once)
    harness.path.write_text(mapping_with("amplitude", "braze"))
    deadline = asyncio.get_running_loop().time() + 10
    while harness.store.last_error is None:
        assert asyncio.get_running_loop().time() < deadline, "the failure was never reported"
        await asyncio.sleep(0.02)  # polling a bounded condition
    assert harness.store.last_error == (
        f"{harness.path}: internal error while reloading: MemoryError: injected: a reload ran out of memory"
    )
    harness.path.write_text(mapping_with("amplitude", "heap"))  # hot reload still works
    await harness.wait_for(lambda: "heap" in harness.destinations())
    assert harness.store.last_error is None


async def test_an_edit_the_events_reported_is_not_reloaded_again_by_the_content_check(tmp_path: Path) -> None:
    path = tmp_path / "mappings.yaml"
    path.write_text(BASE)
    store = PolicyStore()
    store.load_initial(str(path))
    results: list[ReloadResult] = []
    with AuditLog.open(tmp_path / "audit.db") as audit:
        watcher = MappingWatcher(PolicyWriter(store, audit), str(path), debounce_ms=50, step_ms=10, settle_ms=10,
                                 retry_ms=50, check_ms=500, on_result=results.append)  # fmt: skip
        stop = asyncio.Event()
        task = asyncio.create_task(watcher.run(stop))
        try:
            await asyncio.wait_for(watcher.watching.wait(), 10)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            first = watcher.checks
            while watcher.checks == first:  # edit right after a check: the events' reload comes before the next
                assert loop.time() < deadline, "the content check never ran"
                await asyncio.sleep(0.005)
            path.write_text(BASE.replace("id: C0002", "id: 2C"))  # broken: every reload of it counts
            while store.failed_reloads == 0:
                assert loop.time() < deadline, "the broken edit was never read"
                await asyncio.sleep(0.01)  # polling a bounded condition
            seen = watcher.checks
            while watcher.checks < seen + 3:  # three content checks after it: none may read it again
                assert loop.time() < deadline, "the content check stopped"
                await asyncio.sleep(0.01)
            assert store.failed_reloads == 1 and len(results) == 1
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
