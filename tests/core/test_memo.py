"""The byte-bounded memo (consent_core.memo) and the index's memory under hostile traffic."""

from __future__ import annotations

import gc
import tracemalloc

from consent_core.index import compile
from consent_core.memo import Memo

from .test_index import table_mapping


def _put(memo: Memo[str, int], key: str, size: int) -> None:
    memo.put(key, len(key), size)


def test_a_full_generation_rotates_and_counts_what_it_drops() -> None:
    memo: Memo[str, int] = Memo(budget=2_000)  # two generations of 1,000 bytes
    for i in range(10):
        _put(memo, f"k{i}", 50)  # 500 bytes: one generation holds them all
    assert memo.evictions == 0
    for i in range(10, 50):
        _put(memo, f"k{i}", 50)
    stats = memo.stats()
    assert stats.bytes <= 2_000
    assert stats.evictions == 50 - stats.entries > 0
    assert memo.get("k49") == 3  # the newest survive
    assert memo.get("k0") is None


def test_a_hit_in_the_old_generation_survives_the_next_rotation() -> None:
    memo: Memo[str, int] = Memo(budget=2_000)
    _put(memo, "hot", 50)
    for i in range(20):  # young fills and becomes old
        _put(memo, f"k{i}", 50)
    assert memo.get("hot") == 3  # found in old: promoted to young
    for i in range(20, 38):  # the next rotation drops the old generation
        _put(memo, f"k{i}", 50)
    assert memo.get("hot") == 3


def test_an_entry_larger_than_a_sixteenth_of_a_generation_is_not_kept() -> None:
    memo: Memo[str, int] = Memo(budget=32_000)
    _put(memo, "small", 500)
    _put(memo, "huge", 1_001)
    assert memo.get("small") == 5
    assert memo.get("huge") is None
    assert memo.stats().bytes == 500


def test_traffic_that_never_repeats_turns_the_memo_off_and_repeats_turn_it_on() -> None:
    memo: Memo[int, int] = Memo(budget=1 << 30)
    n = 0
    while not memo.skip:  # every lookup misses: after a window the memo is off
        assert memo.get(n) is None
        memo.put(n, n, 100)
        n += 1
    assert n <= 1_024 and memo.seen is not None
    while memo.seen is not None:  # off, sampled calls see the same few keys again and again
        if memo.skip:
            memo.skip -= 1
        else:
            memo.sample(n % 4)
        n += 1
    assert memo.skip == 0  # on again


def test_no_budget_means_always_off() -> None:
    memo: Memo[int, int] = Memo(budget=0)
    assert memo.skip > 1 << 40
    memo.clear()
    assert memo.skip > 1 << 40


def test_many_distinct_large_consent_maps_keep_the_index_within_its_budget() -> None:
    """Hostile traffic: 64 KB consent maps, each one new, with varying destination lists."""
    budget = 1 << 20
    index = compile(table_mapping(), memo_bytes=budget)
    filler = {f"unknown-category-{j:05d}-{'x' * 12}": j % 2 == 0 for j in range(2_000)}  # ~64 KB of ids
    dests = ["amplitude", "google-ads", "braze", "aws-s3", "hotjar"]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(600):  # ~38 MB of consent maps in all, each dropped after its decision
            prefs = {**filler, f"C000{i % 10}": True, f"nonce-{i}": True}
            index.decide(prefs, [*dests[: 1 + i % 5], f"tool-{i}"])
            index.decide(prefs, [*dests[: 1 + i % 5], f"tool-{i}"], explain=True)
            index.decide(prefs, dests)
        del prefs
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert index.memo_stats().bytes <= budget
    assert retained < 2 * budget  # coarse: what the memos hold (estimates) plus allocator slack
