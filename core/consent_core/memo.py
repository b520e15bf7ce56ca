"""A cache of a pure function, bounded in bytes, that steps aside when it does not pay; pure.

Owns the memos of one compiled index. Never holds more than its byte budget (an estimate
per entry from its key's and value's sizes, given by the caller), never does I/O, never decides.

- Two generations (young, old): a hit in old moves to young; when young's share of the budget
  is full it becomes old and the previous old is dropped (counted in `evictions`). Entries in
  steady use survive a rotation, and memory stays under the budget.
- Entries are (value, size, tag), keyed by the key itself (`tag`: what the caller needs to
  know about how the value was made, e.g. the limits its ids were checked against): a hit (the
  case that matters) hashes it once, inside the dict. Misses hash it again for the old
  generation and the store, which is why the memo steps aside when it mostly misses:
- traffic that never repeats (a destination list per event) would pay a probe and a store per
  event, and churn memory (and the garbage collector) for nothing: when fewer than one lookup in
  `_MIN_HIT_SHARE` hits over a window, the memo turns off. Off, it is bypassed (`skip`, a
  countdown) except for one call in `_SAMPLE_EVERY`, whose key's hash it remembers in a set of
  ints; when enough sampled keys repeat, the memo turns back on.

Threads may race on it and lose an entry or a count; never get a wrong answer.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

__all__ = ["DEFAULT_MEMO_BYTES", "Memo", "MemoStats"]

DEFAULT_MEMO_BYTES: Final = 32 << 20  # per compiled index (one policy snapshot)

_WINDOW: Final = 512  # lookups (on) or sampled calls (off) per look at the hit rate
_MIN_HIT_SHARE: Final = 8  # below 1 hit in 8 lookups the memo does not pay for its probes
_SAMPLE_EVERY: Final = 16  # off: one call in 16 is sampled

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class MemoStats:
    """What a memo (or an index's memos together) holds and has dropped."""

    entries: int
    bytes: int  # estimated
    budget: int
    evictions: int  # entries dropped to stay within the budget, since compile


class Memo(Generic[K, V]):
    """key -> value in two generations, at most `budget` estimated bytes in all.

    The hot path reads `young` inline (`e = memo.young.get(key)`, then `e[0]` is the value, and
    `memo.hits += 1`); `entry` (young then old) and `put` are the general path; when `skip` is
    set the memo is off and the caller bypasses it, calling `sample` instead once it runs out.
    """

    __slots__ = (
        "budget", "evictions", "hits", "misses", "old", "old_bytes", "seen", "skip", "young", "young_bytes",
    )

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.young: dict[K, tuple[V, int, object]] = {}
        self.old: dict[K, tuple[V, int, object]] = {}
        self.young_bytes = 0
        self.old_bytes = 0
        self.evictions = 0  # entries dropped with an old generation (a promoted one counts too)
        self.hits = 0
        self.misses = 0
        self.skip = 0  # off: calls left to bypass before the next sample; on: 0
        self.seen: set[int] | None = None  # off: hashes of the sampled keys; on: None
        if budget <= 0:
            self.skip = sys.maxsize  # no budget: off for good

    def get(self, key: K) -> V | None:
        """The value memoised for `key`, or None; counts the hit or miss."""
        e = self.entry(key)
        return None if e is None else e[0]

    def entry(self, key: K) -> tuple[V, int, object] | None:
        """(value, size, tag) memoised for `key`, or None; counts the hit or miss."""
        e = self.young.get(key)
        if e is not None:
            self.hits += 1
            return e
        e = self.old.get(key)
        if e is not None:
            self.hits += 1
            self.put(key, *e)  # promoted: used in this generation too
            return e
        self.misses += 1
        return None

    def sample(self, key: K) -> None:
        """Off: a sampled call's key (the caller bypassed the memo `skip` times before it)."""
        seen = self.seen
        self.skip = _SAMPLE_EVERY - 1
        if seen is None:
            return
        h = hash(key)
        if h in seen:
            self.hits += 1
        else:
            self.misses += 1
            if len(seen) < _WINDOW * 4:
                seen.add(h)
        if self.hits + self.misses >= _WINDOW:
            if self.hits * _MIN_HIT_SHARE >= _WINDOW:  # keys repeat: on again
                self.seen = None
                self.skip = 0
            else:
                seen.clear()
            self.hits = self.misses = 0

    def put(self, key: K, value: V, size: int, tag: object = None) -> None:
        """Remembers `value` (and `tag`) for `key`; `size` estimates the bytes the entry keeps alive."""
        lookups = self.misses + self.hits
        if lookups >= _WINDOW:
            if self.hits * _MIN_HIT_SHARE < lookups:  # off: keys do not repeat enough to pay
                self.seen = set()
                self.skip = _SAMPLE_EVERY - 1
            self.hits = self.misses = 0
        half = self.budget >> 1
        if size > half >> 4:  # one huge entry must not flush everything else
            return
        if self.young_bytes + size > half:
            self.evictions += len(self.old)
            self.old = self.young
            self.old_bytes = self.young_bytes
            self.young = {}
            self.young_bytes = 0
        self.young[key] = (value, size, tag)
        self.young_bytes += size

    def clear(self) -> None:
        """Forgets everything (counted as evictions) and samples the hit rate afresh."""
        self.evictions += len(self.young) + len(self.old)
        self.young = {}
        self.old = {}
        self.young_bytes = self.old_bytes = 0
        self.hits = self.misses = 0
        self.skip = sys.maxsize if self.budget <= 0 else 0
        self.seen = None

    def stats(self) -> MemoStats:
        entries = len(self.young) + len(self.old)
        return MemoStats(entries, self.young_bytes + self.old_bytes, self.budget, self.evictions)
