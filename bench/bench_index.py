"""(a) In-process decisions: `Index.decide` and `EmbeddedDecider` against two references, same run.

Three traffic shapes over the one 12 x 200 mapping: (a1) the repeated lists of `build()` (50
sources, so the per-snapshot memo answers most events), (a2) varying lists (`build_varying()`:
each event draws its own 20 destinations, so every event takes the memo's miss path) and (a3)
`decide_many` over 1,000 events drawn from 10 lists. The baselines: `PlainDecider`
(bench/plain_reference.py, the 30-line frozenset decider: what compiling must beat) and the
naive oracle of tests/reference.py (for the explained rows). Rows marked `pure` repeat a row
with consent-core's C accelerator off (`consent_core.native.pure`, what CONSENT_CORE_PURE=1
does). Each row replays its events for a fixed time; rows take turns, round after round, and
each ratio is taken within a round (this machine is noisy); the table reports medians.
Ratio = rate / baseline's rate: above 1 is faster. Time is this process's CPU time
(`time.process_time`): on a shared machine another process taking the core for a while then
stretches no row (wall time did, by up to 2x between rows).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consent_client import EmbeddedDecider, Request
from consent_core.event import decide_one
from consent_core.index import Index, compile
from consent_core.limits import Limits
from consent_core.native import pure

from bench.plain_reference import PlainDecider
from bench.workload import Event, Workload, build_varying
from tests.reference import reference_decide, reference_split  # run from the repository root

__all__ = ["IndexRow", "format_rows", "run"]

BATCH = 100  # decide_many batch size in (a1) and (a2)
MANY = 1_000  # (a3): events per decide_many call
MANY_LISTS = 10  # (a3): distinct destination lists among them


@dataclass(slots=True)
class IndexRow:
    section: str
    name: str
    destinations_per_event: float
    baseline: str | None = None  # the row (same section) this one is compared with, round by round
    rates: list[float] = field(default_factory=list)  # events/s, one per round
    ratios: list[float] = field(default_factory=list)  # rate / baseline's rate of the same round

    @property
    def events_per_s(self) -> float:
        return statistics.median(self.rates)

    @property
    def us_per_event(self) -> float:
        return 1e6 / self.events_per_s


@dataclass(frozen=True, slots=True)
class _Spec:
    section: str
    name: str
    fn: Callable[[Any], object]
    items: Sequence[Any]  # what `fn` is called with, in turn
    events_per_item: int
    baseline: str | None
    pure: bool = False  # timed with consent_core's C accelerator off (consent_core.native.pure)


def _rate(spec: _Spec, seconds: float) -> float:
    """events per CPU second, over whole passes through the spec's items (at most 5,000 events
    a pass), for about `seconds` of CPU time."""
    fn = spec.fn
    chunk = max(1, 5_000 // spec.events_per_item)
    items = spec.items[:chunk]
    rotate = len(spec.items) > chunk
    n = 0
    offset = 0
    start = time.process_time()
    deadline = start + seconds
    while True:
        if rotate:  # long workloads (varying lists) go on where the last pass stopped
            items = spec.items[offset : offset + chunk]
            offset = (offset + chunk) % len(spec.items)
        for item in items:
            fn(item)
        n += len(items) * spec.events_per_item
        now = time.process_time()
        if now >= deadline:
            return n / (now - start)


def _batches(events: Sequence[Event], size: int) -> list[list[Request]]:
    requests = [Request(e.destinations, e.preferences) for e in events]
    return [requests[i : i + size] for i in range(0, len(requests) - size + 1, size)]


def _check(workload: Workload, plain: PlainDecider, index: Index, decider: EmbeddedDecider) -> None:
    """Every decider under test answers the first 300 events as the oracle does."""
    mapping = workload.mapping
    for e in workload.events[:300]:
        want = reference_split(mapping, e.preferences, e.destinations)
        got = {
            "PlainDecider": tuple(map(tuple, plain.decide(e.preferences, e.destinations))),
            "Index.decide": (lambda o: (o.allowed, o.blocked))(index.decide(e.preferences, e.destinations)),
            "EmbeddedDecider": (lambda r: (r.allowed, r.blocked))(decider.decide(e.destinations, e.preferences)),
        }
        for who, answer in got.items():
            if answer != want:
                raise RuntimeError(f"{who} decided {answer} for {e}, the oracle {want}")


def _specs(workload: Workload, directory: Path) -> list[_Spec]:
    path = workload.write_mapping(directory)
    out: list[_Spec] = []
    for section, w in (("a1", workload), ("a2", build_varying()), ("a3", build_varying(MANY, lists=MANY_LISTS))):
        out += _section(section, w, EmbeddedDecider(path))
    return out


def _section(section: str, w: Workload, decider: EmbeddedDecider) -> list[_Spec]:
    mapping = w.mapping
    plain = PlainDecider(mapping)
    index: Index = compile(mapping)  # one per section: memos do not leak between them
    _check(w, plain, index, decider)
    events = w.events
    pr = "PlainDecider (frozensets, 30 lines)"
    out = [_Spec(section, pr, lambda e: plain.decide(e.preferences, e.destinations), events, 1, None)]
    if section == "a3":
        out.append(_Spec(section, f"EmbeddedDecider.decide_many({MANY})", decider.decide_many,
                         _batches(events, MANY), MANY, pr))
        out.append(_Spec(section, f"EmbeddedDecider.decide_many({MANY}), pure", decider.decide_many,
                         _batches(events, MANY), MANY, pr, pure=True))
        return out

    def cold(e: Event) -> object:
        index.clear_memo()  # what every request would cost without the memo
        return index.decide(e.preferences, e.destinations)

    out += [
        _Spec(section, "Index.decide", lambda e: index.decide(e.preferences, e.destinations), events, 1, pr),
        _Spec(section, "Index.decide, memo cleared per event", cold, events, 1, pr),
        _Spec(section, "EmbeddedDecider.decide", lambda e: decider.decide(e.destinations, e.preferences),
              events, 1, pr),
        _Spec(section, f"EmbeddedDecider.decide_many({BATCH})", decider.decide_many, _batches(events, BATCH),
              BATCH, pr),
        _Spec(section, f"EmbeddedDecider.decide_many({BATCH}), pure", decider.decide_many, _batches(events, BATCH),
              BATCH, pr, pure=True),
    ]
    if section == "a2":  # the same calls with the C accelerator off: what it buys on the miss path
        out += [
            _Spec(section, "Index.decide, pure", lambda e: index.decide(e.preferences, e.destinations), events, 1, pr,
                  pure=True),
            _Spec(section, "EmbeddedDecider.decide, pure", lambda e: decider.decide(e.destinations, e.preferences),
                  events, 1, pr, pure=True),
        ]
    if section != "a1":
        return out

    def cold_explain(e: Event) -> object:
        index.clear_memo()
        return index.decide(e.preferences, e.destinations, explain=True)

    limits = Limits()
    slow = events[:500]  # the naive oracle is slow: a shorter loop keeps each round near `seconds`
    ref, ref_x = "reference (naive sets and dicts)", "reference, explain"
    return [
        *out,
        _Spec(section, ref, lambda e: reference_split(mapping, e.preferences, e.destinations), slow, 1, pr),
        _Spec(section, ref_x, lambda e: reference_decide(mapping, e.preferences, e.destinations), slow, 1, None),
        _Spec(section, "Index.decide explain=True",
              lambda e: index.decide(e.preferences, e.destinations, explain=True), events, 1, ref_x),
        _Spec(section, "Index.decide explain=True, memo cleared", cold_explain, events, 1, ref_x),
        _Spec(section, "decide_one(segment_event ~1 KB JSON)",
              lambda e: decide_one(index, limits, e.destinations, segment_event=e.segment_event), events, 1,
              "Index.decide"),
    ]


SECTIONS = {
    "a1": "repeated lists: build(), 50 sources' fixed lists (the memo answers)",
    "a2": "varying lists: build_varying(), 20 random destinations per event (the memo misses)",
    "a3": f"decide_many: {MANY:,} events per call drawn from {MANY_LISTS} lists (build_varying(lists=10))",
}


def run(workload: Workload, *, seconds: float = 1.0, rounds: int = 3) -> list[IndexRow]:
    """Every row once per round, rows interleaved, so a ratio compares measurements taken side by side."""
    with tempfile.TemporaryDirectory(prefix="consent-bench-index-") as d:
        specs = _specs(workload, Path(d))
        rows = {
            (s.section, s.name): IndexRow(
                s.section, s.name, statistics.fmean(len(e.destinations) for e in _events(s)), s.baseline
            )
            for s in specs
        }
        for s in specs:  # warm up: imports, caches, the memo
            with pure() if s.pure else nullcontext():
                for item in s.items[:300]:
                    s.fn(item)
        for _ in range(rounds):
            this_round: dict[tuple[str, str], float] = {}
            for s in specs:
                with pure() if s.pure else nullcontext():
                    rate = _rate(s, seconds)
                this_round[s.section, s.name] = rate
                rows[s.section, s.name].rates.append(rate)
                if s.baseline is not None:
                    rows[s.section, s.name].ratios.append(rate / this_round[s.section, s.baseline])
        return list(rows.values())


def _events(spec: _Spec) -> list[Event] | list[Request]:
    first = spec.items[0]
    return list(first) if isinstance(first, list) else list(spec.items)


def format_rows(rows: list[IndexRow]) -> str:
    head = f"{'in-process (one core)':<48} {'events/s':>11} {'µs/event':>9} {'dest decisions/s':>17}  ratio"
    out = [head, "-" * len(head)]
    section = ""
    for r in rows:
        if r.section != section:
            section = r.section
            out.append(f"({section}) {SECTIONS[section]}")
        ratio = ""
        if r.baseline is not None:
            ratio = f"{statistics.median(r.ratios):.2f}x {r.baseline}"
        out.append(
            f"  {r.name:<46} {r.events_per_s:>11,.0f} {r.us_per_event:>9.2f} "
            f"{r.events_per_s * r.destinations_per_event:>17,.0f}  {ratio}"
        )
    return "\n".join(out)
