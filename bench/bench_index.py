"""(a) In-process decisions: the compiled `Index.decide` against the naive reference of tests/reference.py.

Each row replays the workload's events for a fixed time; rows take turns, round after round,
and the table reports medians (ratios are taken within a round: this machine is noisy).
The reference is the set-and-dict oracle the property tests use: the ratio says what compiling
the mapping (bitmasks, memo) buys over reading it directly.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from consent_core.event import decide_one
from consent_core.index import Index, compile
from consent_core.limits import Limits

from bench.workload import Event, Workload
from tests.reference import reference_decide, reference_split  # run from the repository root

__all__ = ["IndexRow", "run"]


@dataclass(slots=True)
class IndexRow:
    name: str
    destinations_per_event: float
    baseline: str | None = None  # the row this one is compared with, round by round
    rates: list[float] = field(default_factory=list)  # events/s, one per round
    ratios: list[float] = field(default_factory=list)  # rate / baseline's rate of the same round

    @property
    def events_per_s(self) -> float:
        return statistics.median(self.rates)

    @property
    def us_per_event(self) -> float:
        return 1e6 / self.events_per_s


def _rate(fn: Callable[[Event], object], events: tuple[Event, ...], seconds: float) -> float:
    """events/s over whole passes through `events`, for about `seconds`."""
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for e in events:
            fn(e)
        n += len(events)
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def run(workload: Workload, *, seconds: float = 1.0, rounds: int = 3) -> list[IndexRow]:
    """Every row once per round, rows interleaved, so a ratio compares measurements taken side by side."""
    mapping = workload.mapping
    index: Index = compile(mapping)
    limits = Limits()
    events = workload.events
    slow = events[:500]  # the reference is slow: a shorter loop keeps each round near `seconds`
    per_event = statistics.fmean(len(e.destinations) for e in events)

    def cold(e: Event) -> object:
        index.clear_memo()  # what every request would cost without the memo
        return index.decide(e.preferences, e.destinations)

    def cold_explain(e: Event) -> object:
        index.clear_memo()
        return index.decide(e.preferences, e.destinations, explain=True)

    ref, ref_x, plain = "reference (naive sets and dicts)", "reference, explain", "Index.decide"
    specs: list[tuple[str, Callable[[Event], object], tuple[Event, ...], str | None]] = [
        (ref, lambda e: reference_split(mapping, e.preferences, e.destinations), slow, None),
        (plain, lambda e: index.decide(e.preferences, e.destinations), events, ref),
        ("Index.decide, memo cleared per event", cold, events, ref),
        (ref_x, lambda e: reference_decide(mapping, e.preferences, e.destinations), slow, None),
        ("Index.decide explain=True", lambda e: index.decide(e.preferences, e.destinations, explain=True),
         events, ref_x),
        ("Index.decide explain=True, memo cleared", cold_explain, events, ref_x),
        ("decide_one(segment_event ~1 KB JSON)",
         lambda e: decide_one(index, limits, e.destinations, segment_event=e.segment_event), events, plain),
    ]
    rows = {name: IndexRow(name, per_event, baseline) for name, _, _, baseline in specs}
    for _, fn, evs, _ in specs:  # warm up: imports, caches, the memo
        for e in evs[:300]:
            fn(e)
    for _ in range(rounds):
        this_round: dict[str, float] = {}
        for name, fn, evs, baseline in specs:
            this_round[name] = rate = _rate(fn, evs, seconds)
            rows[name].rates.append(rate)
            if baseline is not None:
                rows[name].ratios.append(rate / this_round[baseline])
    return list(rows.values())


def format_rows(rows: list[IndexRow]) -> str:
    head = f"{'in-process (one core)':<44} {'events/s':>11} {'µs/event':>9} {'dest decisions/s':>17}  ratio"
    out = [head, "-" * len(head)]
    for r in rows:
        ratio = ""
        if r.baseline is not None:
            ratio = f"{statistics.median(r.ratios):.2f}x {r.baseline}"
        out.append(
            f"{r.name:<44} {r.events_per_s:>11,.0f} {r.us_per_event:>9.2f} "
            f"{r.events_per_s * r.destinations_per_event:>17,.0f}  {ratio}"
        )
    return "\n".join(out)
