"""PolicyStore: first load, generations, identical digests, failed reloads keeping the last good policy."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from consent_core.errors import MappingError, Problem
from consent_core.index import compile as compile_index
from consent_core.model import Category, ConsentMapping

from consent_sidecar.store.policy import PolicyStore, Snapshot

A = ConsentMapping(categories=(Category("C0001", "Necessary", ("amplitude",)),))
B = ConsentMapping(categories=(Category("C0001", "Necessary", ("amplitude", "mixpanel")),))
BROKEN = MappingError([Problem("categories[0].id", "must not start with a digit", 7, 9)], "mappings.yaml")


class FakeFile:
    """A loader whose "file" the test rewrites: a ConsentMapping, or an exception to raise."""

    def __init__(self, content: ConsentMapping | BaseException = A) -> None:
        self.content = content
        self.threads: list[int] = []

    def __call__(self, path: str) -> ConsentMapping:
        self.threads.append(threading.get_ident())
        if isinstance(self.content, BaseException):
            raise self.content
        return self.content


def store_with(file: FakeFile) -> PolicyStore:
    store = PolicyStore(loader=file)
    store.load_initial("mappings.yaml")
    return store


def test_first_load_is_generation_one_with_the_canonical_digest() -> None:
    store = store_with(FakeFile())
    snap = store.current
    assert snap.generation == 1
    assert snap.digest == A.digest() == snap.index.digest
    assert snap.source == "mappings.yaml"
    assert snap.loaded_at.tzinfo is UTC
    assert abs((datetime.now(UTC) - snap.loaded_at).total_seconds()) < 60
    assert (store.reloads, store.failed_reloads, store.last_error) == (0, 0, None)


def test_current_before_any_load_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no policy loaded"):
        _ = PolicyStore().current


def test_a_broken_first_load_raises_and_publishes_nothing() -> None:
    store = PolicyStore(loader=FakeFile(BROKEN))
    with pytest.raises(MappingError):
        store.load_initial("mappings.yaml")
    assert not store.loaded


def test_publishing_a_different_policy_increments_the_generation_and_tells_listeners() -> None:
    store = store_with(FakeFile())
    seen: list[tuple[Snapshot | None, Snapshot]] = []
    store.add_listener(lambda old, new: seen.append((old, new)))
    first = store.current
    second = store.publish(compile_index(B))
    assert second is not None and second is store.current
    assert second.generation == 2 and second.digest == B.digest()
    assert seen == [(first, second)]


def test_an_identical_digest_publishes_nothing() -> None:
    store = store_with(FakeFile())
    seen: list[object] = []
    store.add_listener(lambda old, new: seen.append(new))
    before = store.current
    # A fresh compile of an equal mapping (e.g. the file re-saved, or only comments changed).
    assert store.publish(compile_index(ConsentMapping(categories=A.categories))) is None
    assert store.current is before
    assert seen == []


def test_reload_publishes_a_changed_file() -> None:
    file = FakeFile()
    store = store_with(file)
    file.content = B
    result = store.reload_from_file()
    assert result.ok and result.changed and result.error is None
    assert result.snapshot is store.current and store.current.generation == 2
    assert store.reloads == 1


def test_reloading_an_unchanged_file_is_ok_and_changes_nothing() -> None:
    store = store_with(FakeFile())
    result = store.reload_from_file()
    assert result.ok and not result.changed
    assert store.current.generation == 1
    assert store.reloads == 0


def test_a_failed_reload_keeps_the_last_good_policy_and_records_the_error() -> None:
    file = FakeFile()
    store = store_with(file)
    good = store.current
    file.content = BROKEN
    result = store.reload_from_file()  # raises nothing
    assert not result.ok and not result.changed
    assert result.error == "mappings.yaml:7:9: categories[0].id: must not start with a digit"
    assert store.current is good
    assert store.failed_reloads == 1
    assert store.last_error == result.error
    assert store.last_error_at is not None and store.last_error_at.tzinfo is UTC


def test_a_good_reload_clears_the_last_error_even_when_unchanged() -> None:
    file = FakeFile()
    store = store_with(file)
    file.content = BROKEN
    store.reload_from_file()
    file.content = A  # the broken edit reverted
    result = store.reload_from_file()
    assert result.ok and not result.changed
    assert (store.last_error, store.last_error_at, store.failed_reloads) == (None, None, 1)


def test_an_unreadable_file_is_a_failed_reload() -> None:
    file = FakeFile()
    store = store_with(file)
    file.content = FileNotFoundError(2, "No such file or directory")
    result = store.reload_from_file()
    assert not result.ok
    assert result.error == "mappings.yaml: cannot read: No such file or directory"
    assert store.current.generation == 1


def test_an_unexpected_loader_error_is_a_failed_reload_not_a_crash() -> None:
    file = FakeFile()
    store = store_with(file)
    file.content = KeyError("boom")
    result = store.reload_from_file()
    assert not result.ok and result.error is not None and "internal error: KeyError" in result.error
    assert isinstance(result.exception, KeyError)
    assert store.current.generation == 1


async def test_reload_async_compiles_off_the_event_loop_and_publishes_on_it() -> None:
    file = FakeFile()
    store = store_with(file)
    published_on: list[int] = []
    store.add_listener(lambda old, new: published_on.append(threading.get_ident()))
    file.content = B
    result = await store.reload_async()
    assert result.ok and result.changed
    assert file.threads[-1] != threading.get_ident()
    assert published_on == [threading.get_ident()]


async def test_candidate_halves_compose_to_a_reload() -> None:
    file = FakeFile()
    store = store_with(file)
    file.content = B
    candidate = await store.load_candidate()
    assert candidate.index is not None and store.current.generation == 1  # loading publishes nothing
    assert store.commit_candidate(candidate).changed
    assert store.current.generation == 2


def test_concurrent_publishes_get_distinct_consecutive_generations() -> None:
    store = store_with(FakeFile())
    generations: list[int] = []
    lock = threading.Lock()
    mappings = [ConsentMapping(categories=(Category("C0001", "Necessary", (f"d{i}",)),)) for i in range(40)]

    def publish(m: ConsentMapping) -> None:
        snap = store.publish(compile_index(m))
        assert snap is not None
        with lock:
            generations.append(snap.generation)

    threads = [threading.Thread(target=publish, args=(m,)) for m in mappings]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sorted(generations) == list(range(2, 42))
    assert store.current.generation == 41


def test_the_default_loader_reads_a_real_mapping_file(mapping_path: Path) -> None:
    store = PolicyStore()
    snap = store.load_initial(str(mapping_path))
    assert snap.generation == 1
    assert "google-ads" in snap.index.known_destinations
    # Comments and layout are not policy: re-saving with a comment publishes nothing.
    mapping_path.write_text("# edited by hand\n" + mapping_path.read_text())
    assert store.reload_from_file().ok and store.current.generation == 1
    mapping_path.write_text(mapping_path.read_text().replace("[amplitude, mixpanel]", "[amplitude]"))
    assert store.reload_from_file().changed and store.current.generation == 2
    mapping_path.write_text("version: 1\ncategories:\n  - id: 9bad\n")
    result = store.reload_from_file()
    assert not result.ok and result.error is not None and str(mapping_path) in result.error
    assert store.current.generation == 2
