"""The Source Debugger, offline: what the pipeline will do with a stream of Segment events (JSON Lines).

`Inspector.feed(stream)` reads events line by line and `report()` returns the counts of the
`inspect` report (docs/reference.md, "Operator commands"): valid and invalid events, consent
present or not, unknown and unused category ids, and per destination how many events it is
allowed and blocked (and, against a second mapping, how many would change).

Decisions are the server's own: every event is validated by `consent_core.event.parse_segment_event`
(directly, or on the consent and integrations parts of the event) and decided by
`Index.decide_mask` of the same compiled index the sidecar serves. Never a second
implementation of either.

How it stays fast and flat. A line is first read by msgspec into a small struct that keeps
only `type`, `event`, `context.consent` and `integrations` (the latter two as raw bytes):
msgspec checks the whole line is JSON without building the rest of the event. Lines it
refuses, lines too large or possibly too deep, and non-ASCII lines that are not UTF-8 take
the server's path whole. The raw consent and integrations parts are classified once per
distinct value (real traffic repeats a handful), and each event then only increments one
counter keyed by (consent class, integrations class, preference event); per-destination counts
are expanded from those counters when they are folded in. Memory is bounded by the class and
counter limits below, whatever the length of the input; lines longer than the event size
limit are never held whole.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Final

import msgspec
from consent_core.errors import InvalidArgument
from consent_core.event import parse_segment_event
from consent_core.index import PREFERENCE_EVENT_NAME, Index
from consent_core.limits import Limits

__all__ = ["MAX_INVALID_LINES", "MAX_UNKNOWN_IDS", "Inspector"]

MAX_INVALID_LINES: Final = 10  # invalid line numbers reported
MAX_UNKNOWN_IDS: Final = 1000  # distinct unknown category ids counted; beyond, counted as dropped
_MAX_CLASSES: Final = 1 << 16  # distinct consent or integrations values held before folding in
_PROGRESS_EVERY: Final = 1 << 14  # lines between progress callbacks


class _Context(msgspec.Struct):
    consent: msgspec.Raw = None  # type: ignore[assignment]  # absent -> None; present -> its raw JSON


class _Event(msgspec.Struct):
    type: Any = None
    event: Any = None
    context: _Context | None = None
    integrations: msgspec.Raw = None  # type: ignore[assignment]


_NO_CONSENT: Final = 0  # consent class kinds
_NO_PREFERENCES: Final = 1  # context.consent is an object without a categoryPreferences object
_PREFERENCES: Final = 2


@dataclass(frozen=True, slots=True)
class _ConsentClass:
    kind: int
    granted: int | None  # under the mapping; None = no consent object
    granted_against: int | None  # under --against
    ids: tuple[str, ...] = ()  # the category ids the event's categoryPreferences names


@dataclass
class _Totals:
    """What the report is made of; counters only."""

    events: int = 0
    invalid: int = 0
    invalid_lines: list[int] = field(default_factory=list)
    with_consent: int = 0
    without_consent: int = 0
    consent_without_preferences: int = 0
    preference_updated: int = 0
    mentioned: set[str] = field(default_factory=set)  # mapping category ids some event names
    unknown: dict[str, int] = field(default_factory=dict)
    unknown_dropped: int = 0  # mentions of unknown ids beyond MAX_UNKNOWN_IDS distinct ones


class Inspector:
    """Counts what the mapping (and optionally a second one) decides for a stream of events.

    `destinations`: the destinations every event is decided for (each once); None = every
    destination the mapping knows (with `against`, the union of both, sorted).
    """

    def __init__(
        self,
        index: Index,
        destinations: Sequence[str] | None = None,
        *,
        against: Index | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.index = index
        self.against = against
        self.limits = limits or Limits()
        if destinations is None:
            known = set(index.known_destinations)
            if against is not None:
                known |= set(against.known_destinations)
            destinations = sorted(known)
        self.destinations: tuple[str, ...] = tuple(dict.fromkeys(destinations))
        # The server's own check of a request's destinations (count, id size, no leading '/').
        from consent_core.event import check_destinations

        check_destinations(self.destinations, self.limits)
        self._ids = {c.id for c in index.mapping.categories}
        self._by_fold = {c.id.casefold(): c.id for c in index.mapping.categories}
        self._decoder = msgspec.json.Decoder(_Event)
        self._totals = _Totals()
        self.allowed = dict.fromkeys(self.destinations, 0)
        self.blocked = dict.fromkeys(self.destinations, 0)
        self.allowed_to_blocked = dict.fromkeys(self.destinations, 0)
        self.blocked_to_allowed = dict.fromkeys(self.destinations, 0)
        self._reset()

    def _reset(self) -> None:
        self._consent: dict[bytes | None, int] = {None: 0}  # raw consent JSON -> class number
        self._consent_classes: list[_ConsentClass | None] = [_ConsentClass(_NO_CONSENT, None, None)]
        self._integrations: dict[bytes | None, int] = {None: 0}  # raw integrations JSON -> class number
        self._integration_classes: list[dict[str, Any] | None] = [None]
        self._counts: dict[tuple[int, int, bool], int] = {}

    # -- classification, once per distinct value -------------------------------------------------

    def _consent_class(self, prefs: dict[str, bool] | None, is_object: bool) -> _ConsentClass:
        if prefs is None:
            return _ConsentClass(_NO_PREFERENCES if is_object else _NO_CONSENT, None, None)
        against = self.against
        return _ConsentClass(
            _PREFERENCES, self.index.granted_mask(prefs),
            against.granted_mask(prefs) if against is not None else None, tuple(prefs),
        )

    def _classify_consent(self, raw: bytes) -> int:
        """The class number of a raw `context.consent` value; -1 when the server would refuse it."""
        try:
            ev = parse_segment_event(b'{"context":{"consent":' + raw + b"}}", self.limits)
        except InvalidArgument:
            return -1
        cls = self._consent_class(ev.preferences, raw[:1] == b"{")
        self._consent_classes.append(cls)
        number = len(self._consent_classes) - 1
        self._consent[raw] = number
        return number

    def _classify_integrations(self, raw: bytes) -> int:
        try:
            ev = parse_segment_event(b'{"integrations":' + raw + b"}", self.limits)
        except InvalidArgument:
            return -1
        self._integration_classes.append(ev.integrations or None)
        number = len(self._integration_classes) - 1
        self._integrations[raw] = number
        return number

    def _slow(self, line: bytes) -> tuple[int, int, bool] | None:
        """The server's whole path for a line the fast reader refused (or could not vouch for); None = invalid."""
        line = line.rstrip(b"\r\n")  # what a pipeline sends is the event, not its line break
        try:
            ev = parse_segment_event(line, self.limits)
        except InvalidArgument:
            return None
        is_object = False
        if ev.preferences is None:  # valid, so context (if any) is an object: is consent one?
            context = json.loads(line).get("context")
            is_object = isinstance(context, dict) and isinstance(context.get("consent"), dict)
        self._consent_classes.append(self._consent_class(ev.preferences, is_object))
        self._integration_classes.append(ev.integrations or None)
        return len(self._consent_classes) - 1, len(self._integration_classes) - 1, ev.preference_event

    # -- the hot loop ------------------------------------------------------------------------------

    def feed(self, stream: IO[bytes], progress: Callable[[], None] | None = None) -> None:
        """Reads every line of `stream` (binary); line numbers continue from the previous feed."""
        t = self._totals
        n = t.events
        limit = self.limits.max_event_bytes
        max_depth = self.limits.max_event_depth
        readline = stream.readline
        decode = self._decoder.decode
        decode_error = msgspec.DecodeError  # ValidationError is a DecodeError
        preference_name = PREFERENCE_EVENT_NAME
        counts = self._counts
        consent_of = self._consent
        integrations_of = self._integrations
        read_limit = limit + 2  # an event of the maximum size plus "\r\n"
        next_progress = n + _PROGRESS_EVERY
        while True:
            line = readline(read_limit)
            if not line:
                break
            n += 1
            if len(line) == read_limit and line[-1] != 10:
                self._skip_rest(readline, read_limit)  # never hold an oversized line: it is invalid anyway
                self._invalid(n)
                continue
            if n >= next_progress:
                next_progress = n + _PROGRESS_EVERY
                if progress is not None:
                    progress()
            key: tuple[int, int, bool] | None
            try:
                if not line.isascii():
                    line.decode()  # the server reads events as strict UTF-8
                ev = decode(line)
            except (decode_error, UnicodeDecodeError):
                key = self._slow(line)
            else:
                # Nesting deeper than max_depth needs more than max_depth brackets: count, and check exactly if so.
                if len(line) > limit or line.count(b"{") + line.count(b"[") > max_depth:
                    key = self._slow(line)
                else:
                    ctx = ev.context
                    part = None if ctx is None else ctx.consent
                    if part is None:
                        c = 0
                    else:
                        raw = bytes(part)
                        c = consent_of.get(raw, -2)
                        if c == -2:
                            c = self._classify_consent(raw)
                    part = ev.integrations
                    if part is None:
                        i = 0
                    else:
                        raw = bytes(part)
                        i = integrations_of.get(raw, -2)
                        if i == -2:
                            i = self._classify_integrations(raw)
                    key = None if c < 0 or i < 0 else (c, i, ev.type == "track" and ev.event == preference_name)
            if key is None:
                self._invalid(n)
                continue
            k = counts.get(key)
            if k is not None:
                counts[key] = k + 1
                continue
            counts[key] = 1
            if len(counts) > _MAX_CLASSES or self._classes_full():
                t.events = n
                self._fold()  # bounded memory: fold the counters in, start the classes over
                counts, consent_of, integrations_of = self._counts, self._consent, self._integrations
        t.events = n

    def _classes_full(self) -> bool:
        return len(self._consent_classes) > _MAX_CLASSES or len(self._integration_classes) > _MAX_CLASSES

    @staticmethod
    def _skip_rest(readline: Callable[[int], bytes], size: int) -> None:
        while True:
            chunk = readline(size)
            if not chunk or chunk[-1] == 10:
                return

    def _invalid(self, n: int) -> None:
        t = self._totals
        t.invalid += 1
        if len(t.invalid_lines) < MAX_INVALID_LINES:
            t.invalid_lines.append(n)

    # -- folding counters into the totals -----------------------------------------------------------

    def _fold(self) -> None:
        """Expands the per-class counters into the per-destination totals and starts over (bounded memory)."""
        t = self._totals
        dests = self.destinations
        index, against = self.index, self.against
        for (c, i, preference_event), k in self._counts.items():
            cls = self._consent_classes[c]
            assert cls is not None
            integrations = self._integration_classes[i]
            if cls.kind == _PREFERENCES:
                t.with_consent += k
                for cid in cls.ids:
                    if cid in self._ids:
                        t.mentioned.add(cid)
                    elif cid in t.unknown:
                        t.unknown[cid] += k
                    elif len(t.unknown) < MAX_UNKNOWN_IDS:
                        t.unknown[cid] = k
                    else:
                        t.unknown_dropped += k
            else:
                t.without_consent += k
                t.consent_without_preferences += k if cls.kind == _NO_PREFERENCES else 0
            t.preference_updated += k if preference_event else 0
            blocked = set(index.decide_mask(
                cls.granted, dests, integrations=integrations, preference_event=preference_event
            ).blocked)
            for d in dests:
                if d in blocked:
                    self.blocked[d] += k
                else:
                    self.allowed[d] += k
            if against is not None:
                then = set(against.decide_mask(
                    cls.granted_against, dests, integrations=integrations, preference_event=preference_event
                ).blocked)
                for d in blocked - then:
                    self.blocked_to_allowed[d] += k
                for d in then - blocked:
                    self.allowed_to_blocked[d] += k
        self._reset()

    def report(self) -> dict[str, Any]:
        """The `inspect` JSON report of everything fed so far."""
        self._fold()
        t = self._totals
        enabled = [c.id for c in self.index.mapping.categories if c.enabled]
        out: dict[str, Any] = {
            "events": t.events,
            "invalid": t.invalid,
            "invalid_lines": list(t.invalid_lines),
            "with_consent": t.with_consent,
            "without_consent": t.without_consent,
            "consent_without_preferences": t.consent_without_preferences,
            "preference_updated": t.preference_updated,
            "unknown_categories": {
                cid: {"events": k, "did_you_mean": self._by_fold.get(cid.casefold())}
                for cid, k in sorted(t.unknown.items(), key=lambda item: (-item[1], item[0]))
            },
            "unused_categories": [cid for cid in enabled if cid not in t.mentioned],
            "destinations": {d: {"allowed": self.allowed[d], "blocked": self.blocked[d]} for d in self.destinations},
        }
        if self.against is not None:
            out["changes"] = {
                d: {"allowed_to_blocked": self.allowed_to_blocked[d], "blocked_to_allowed": self.blocked_to_allowed[d]}
                for d in self.destinations
            }
        if t.unknown_dropped:
            out["unknown_categories_not_listed"] = t.unknown_dropped
        return out
