"""The benchmark workload: one realistic mapping and a fixed stream of events, from a fixed seed.

12 categories (C0001 strictly necessary ... C0010, C0011 in shadow, C0012 disabled), 200
destinations (a few exempt, a few `any`, a few known only from `destinations:`). Events come
from 50 sources, each with its own list of 20 destinations (as a Segment source has), some
naming an instance (`dest-007/eu`) or a destination the mapping does not know. Consent mix:
10% of events carry no consent object; of the rest about 45% grant everything, 35% only
C0001 (strictly necessary), 20% a random choice per category. Pure; no I/O but `write_mapping`.

`build_varying()` is the same mapping under traffic whose destination lists do not repeat: each
event asks about 20 destinations drawn at random from the 200, consent ~55% grant all, ~25%
C0001 only, ~15% random, ~5% absent. 20,000 events, more than the default memos hold (in the
index or the server), so replaying them in a loop cannot turn into memo hits. With `lists=N`
the events draw from N fixed lists instead (what a batch from a few sources looks like).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from consent_core.model import Category, ConsentMapping, DestinationSettings, Resolution, Settings, mapping_problems

__all__ = ["SEED", "Event", "Workload", "build", "build_scale", "build_varying", "without_shadow"]

SEED = 20_240_917
N_CATEGORIES = 12
N_DESTINATIONS = 200
N_SOURCES = 50
DESTINATIONS_PER_EVENT = 20
N_EVENTS = 5_000
NO_CONSENT_SHARE = 0.10
GRANT_ALL_SHARE = 0.45
NECESSARY_ONLY_SHARE = 0.35  # the rest (20%) is random

CATEGORY_NAMES = [
    "Strictly Necessary Cookies",
    "Performance Cookies",
    "Functional Cookies",
    "Targeting Cookies",
    "Social Media Cookies",
    "Analytics Cookies",
    "Personalisation Cookies",
    "Advertising Cookies",
    "Email Marketing",
    "Product Research",
    "Experiments (dry run)",
    "Retired Partners",
]


@dataclass(frozen=True, slots=True)
class Event:
    preferences: dict[str, bool] | None  # None = no consent object
    destinations: tuple[str, ...]
    segment_event: bytes  # the same event as raw Segment JSON


@dataclass(frozen=True, slots=True)
class Workload:
    mapping: ConsentMapping
    events: tuple[Event, ...]
    traffic: str = f"from {N_SOURCES} sources (seed {SEED})"  # how destination lists were drawn

    def mapping_yaml(self) -> str:
        return _to_yaml(self.mapping)

    def write_mapping(self, directory: Path) -> Path:
        path = directory / "bench-mappings.yaml"
        path.write_text(self.mapping_yaml())
        return path

    def describe(self) -> str:
        events = self.events
        n = len(events)
        consented = [e.preferences for e in events if e.preferences is not None]
        c = len(consented)
        all_ = sum(all(p.values()) for p in consented)
        necessary = sum([k for k, v in p.items() if v] == ["C0001"] for p in consented)
        return (
            f"{len(self.mapping.categories)} categories, {len(self.mapping.known_destinations())} destinations, "
            f"{len(events[0].destinations)} destinations/event, {n} events {self.traffic}; "
            f"no consent object {(n - c) / n:.0%}; of the rest: grant all {all_ / c:.0%}, "
            f"C0001 only {necessary / c:.0%}, random {(c - all_ - necessary) / c:.0%}"
        )


def _mapping(rng: random.Random) -> ConsentMapping:
    ids = [f"C{i:04d}" for i in range(1, N_CATEGORIES + 1)]
    destinations = [f"dest-{i:03d}" for i in range(N_DESTINATIONS)]
    exempt = destinations[:10]  # warehouses, object storage: enforce: false
    settings_only = destinations[10:20]  # known only from `destinations:` (unmapped)
    mapped = destinations[20:]
    members: dict[str, list[str]] = {cid: [] for cid in ids}
    for d in mapped:
        # Strictly necessary is rare; most destinations need one or two of C0002..C0010.
        if rng.random() < 0.08:
            members["C0001"].append(d)
        for cid in rng.sample(ids[1:10], k=rng.choice((1, 1, 1, 2, 2, 3))):
            members[cid].append(d)
    members["C0011"] = rng.sample(mapped, 30)  # shadow
    members["C0012"] = rng.sample(mapped, 20)  # disabled
    for d in exempt[:3]:
        members["C0002"].append(d)  # exempt yet mapped: required categories still reported
    categories = tuple(
        Category(
            cid,
            CATEGORY_NAMES[i],
            tuple(members[cid]),
            enabled=cid != "C0012",
            shadow=cid == "C0011",
        )
        for i, cid in enumerate(ids)
    )
    settings: dict[str, DestinationSettings] = {d: DestinationSettings(enforce=False) for d in exempt}
    settings.update({d: DestinationSettings() for d in settings_only})
    for d in rng.sample(mapped, 27):
        settings[d] = DestinationSettings(resolution=Resolution.ANY)
    mapping = ConsentMapping(categories, settings, Settings())
    problems = mapping_problems(mapping)
    assert not problems, problems
    return mapping


def _sources(rng: random.Random, mapping: ConsentMapping) -> list[tuple[str, ...]]:
    known = list(mapping.known_destinations())
    sources = []
    for s in range(N_SOURCES):
        dests = rng.sample(known, DESTINATIONS_PER_EVENT)
        if s % 5 == 0:
            dests[0] = f"{dests[0]}/eu"  # one instance of a destination
        if s % 7 == 0:
            dests[-1] = f"unknown-{s}"  # a destination the mapping does not know
        sources.append(tuple(dests))
    return sources


def _preferences(rng: random.Random) -> dict[str, bool] | None:
    ids = [f"C{i:04d}" for i in range(1, N_CATEGORIES + 1)]
    r = rng.random()
    if r < NO_CONSENT_SHARE:
        return None
    r = rng.random()
    if r < GRANT_ALL_SHARE:
        return dict.fromkeys(ids, True)
    if r < GRANT_ALL_SHARE + NECESSARY_ONLY_SHARE:
        return {cid: cid == "C0001" for cid in ids}
    return {cid: cid == "C0001" or rng.random() < 0.5 for cid in ids}


def _segment_event(rng: random.Random, n: int, preferences: dict[str, bool] | None) -> bytes:
    """A typical ~1 KB Segment track event carrying the consent object (if any)."""
    context: dict[str, object] = {
        "library": {"name": "analytics.js", "version": "next-1.70.0"},
        "page": {"path": "/checkout", "url": "https://shop.example/checkout", "title": "Checkout"},
        "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0",
        "locale": "en-GB",
        "ip": f"203.0.113.{n % 250}",
    }
    if preferences is not None:
        context["consent"] = {"categoryPreferences": preferences}
    event = {
        "type": "track",
        "event": "Order Completed",
        "messageId": f"ajs-next-{n:08d}-{rng.getrandbits(64):016x}",
        "anonymousId": f"{rng.getrandbits(128):032x}",
        "userId": f"user-{n % 1000}",
        "timestamp": "2024-09-17T12:00:00.000Z",
        "properties": {
            "order_id": f"o-{n}",
            "total": 42.5,
            "currency": "EUR",
            "products": [{"product_id": f"p-{i}", "price": 10.625, "quantity": 1} for i in range(4)],
        },
        "context": context,
        "integrations": {},
    }
    return json.dumps(event, separators=(",", ":")).encode()


def build(n_events: int = N_EVENTS, seed: int = SEED) -> Workload:
    rng = random.Random(seed)
    mapping = _mapping(rng)
    sources = _sources(rng, mapping)
    events = []
    for n in range(n_events):
        preferences = _preferences(rng)
        events.append(Event(preferences, rng.choice(sources), _segment_event(rng, n, preferences)))
    return Workload(mapping, tuple(events))


# The varying-destinations mix (the shape of the held-out workload of issue 16).
VARYING_NO_CONSENT_SHARE = 0.05
VARYING_GRANT_ALL_SHARE = 0.55
VARYING_NECESSARY_ONLY_SHARE = 0.25  # the rest (15%) is random
VARYING_EVENTS = 20_000  # ~37 MB of (consent, destinations) memo entries: over any default budget


def _varying_preferences(rng: random.Random) -> dict[str, bool] | None:
    ids = [f"C{i:04d}" for i in range(1, N_CATEGORIES + 1)]
    r = rng.random()
    if r < VARYING_NO_CONSENT_SHARE:
        return None
    if r < VARYING_NO_CONSENT_SHARE + VARYING_GRANT_ALL_SHARE:
        return dict.fromkeys(ids, True)
    if r < VARYING_NO_CONSENT_SHARE + VARYING_GRANT_ALL_SHARE + VARYING_NECESSARY_ONLY_SHARE:
        return {cid: cid == "C0001" for cid in ids}
    return {cid: cid == "C0001" or rng.random() < 0.5 for cid in ids}


def without_shadow(workload: Workload) -> Workload:
    """The same events over the mapping without its shadow (dry-run) categories (`bench grpc
    --no-shadow`: the native DecideBatch counts metrics only for mappings without them)."""
    m = workload.mapping
    mapping = ConsentMapping(tuple(c for c in m.categories if not c.shadow), m.destinations, m.settings)
    return Workload(mapping, workload.events, workload.traffic)


def build_varying(n_events: int = VARYING_EVENTS, seed: int = SEED + 16, *, lists: int | None = None) -> Workload:
    """`build()`'s mapping; each event asks about 20 destinations drawn at random from the 200
    (or, with `lists`, one of that many fixed random lists); the varying consent mix."""
    mapping = _mapping(random.Random(SEED))  # the very mapping of build(): one file serves both
    rng = random.Random(seed)
    known = list(mapping.known_destinations())
    fixed = [tuple(rng.sample(known, DESTINATIONS_PER_EVENT)) for _ in range(lists or 0)]
    events = []
    for n in range(n_events):
        preferences = _varying_preferences(rng)
        dests = rng.choice(fixed) if fixed else tuple(rng.sample(known, DESTINATIONS_PER_EVENT))
        events.append(Event(preferences, dests, _segment_event(rng, n, preferences)))
    how = f"drawing from {lists} fixed lists" if fixed else "each drawing its own random list"
    return Workload(mapping, tuple(events), f"{how} (seed {seed})")


def _scale_mapping(rng: random.Random, n_categories: int, n_destinations: int) -> ConsentMapping:
    """The shape of the 12 x 200 mapping at any size: 1% exempt, 1% settings-only, 13% `any`, the
    rest mapped to 1-3 categories; the last category disabled, the one before it in shadow."""
    ids = [f"C{i:04d}" for i in range(1, n_categories + 1)]
    width = len(str(n_destinations - 1))
    destinations = [f"dest-{i:0{width}d}" for i in range(n_destinations)]
    n1 = max(1, n_destinations // 100)
    exempt, settings_only, mapped = destinations[:n1], destinations[n1 : 2 * n1], destinations[2 * n1 :]
    members: dict[str, list[str]] = {cid: [] for cid in ids}
    ordinary = ids[1:-2]
    for d in mapped:
        if rng.random() < 0.08:
            members[ids[0]].append(d)
        for cid in rng.sample(ordinary, k=rng.choice((1, 1, 1, 2, 2, 3))):
            members[cid].append(d)
    members[ids[-2]] = rng.sample(mapped, max(1, len(mapped) // 6))  # shadow
    members[ids[-1]] = rng.sample(mapped, max(1, len(mapped) // 9))  # disabled
    for cid in ids:
        if not members[cid]:
            members[cid].append(rng.choice(mapped))
    categories = tuple(
        Category(cid, f"Category {cid}", tuple(members[cid]), enabled=cid != ids[-1], shadow=cid == ids[-2])
        for cid in ids
    )
    settings: dict[str, DestinationSettings] = {d: DestinationSettings(enforce=False) for d in exempt}
    settings.update({d: DestinationSettings() for d in settings_only})
    for d in rng.sample(mapped, len(mapped) * 27 // 180):
        settings[d] = DestinationSettings(resolution=Resolution.ANY)
    mapping = ConsentMapping(categories, settings, Settings())
    problems = mapping_problems(mapping)
    assert not problems, problems[:3]
    return mapping


def build_scale(
    n_categories: int = 100, n_destinations: int = 10_000, n_events: int = N_EVENTS, seed: int = SEED,
    consent_ids: int | None = None,
) -> Workload:
    """A mapping of `n_categories` x `n_destinations` with the same traffic shape as `build()`:
    50 sources of 20 destinations, the same consent mix over the mapping's categories (or only
    over its first `consent_ids` categories: consent objects the size of the small workload's)."""
    rng = random.Random(seed)
    mapping = _scale_mapping(rng, n_categories, n_destinations)
    sources = _sources(rng, mapping)
    ids = [c.id for c in mapping.categories][:consent_ids]
    events = []
    for n in range(n_events):
        r = rng.random()
        preferences: dict[str, bool] | None
        if r < NO_CONSENT_SHARE:
            preferences = None
        else:
            r = rng.random()
            if r < GRANT_ALL_SHARE:
                preferences = dict.fromkeys(ids, True)
            elif r < GRANT_ALL_SHARE + NECESSARY_ONLY_SHARE:
                preferences = {cid: cid == ids[0] for cid in ids}
            else:
                preferences = {cid: cid == ids[0] or rng.random() < 0.5 for cid in ids}
        events.append(Event(preferences, rng.choice(sources), _segment_event(rng, n, preferences)))
    return Workload(mapping, tuple(events))


def _to_yaml(mapping: ConsentMapping) -> str:
    """The mapping in the file format of docs/reference.md §4 (flow lists; ids need no quoting)."""
    lines = [
        "# Generated by bench/workload.py: do not edit.",
        "version: 1",
        "settings:",
        f"  unknown_destinations: {mapping.settings.unknown_destinations.value}",
        "categories:",
    ]
    for c in mapping.categories:
        lines += [
            f"  - id: {c.id}",
            f"    name: {json.dumps(c.name)}",
            f"    enabled: {str(c.enabled).lower()}",
            f"    shadow: {str(c.shadow).lower()}",
            f"    destinations: [{', '.join(c.destinations)}]",
        ]
    lines.append("destinations:")
    for d, s in sorted(mapping.destinations.items()):
        lines.append(f"  {d}: {{enforce: {str(s.enforce).lower()}, resolution: {s.resolution.value}}}")
    return "\n".join(lines) + "\n"
