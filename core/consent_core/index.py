"""The compiled decision table: `compile(ConsentMapping) -> Index` and `Index.decide`, the hot path; pure.

Work that depends only on the mapping happens here at compile time: category ids become bit
positions, each destination becomes one (exempt, any, required mask, shadow mask) row, and a
consent object becomes one granted mask. Decisions are memoised per snapshot on
(granted mask, destinations) because real traffic repeats both. Never does I/O or logging.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from consent_core.model import ConsentMapping, Resolution, UnknownDestinations

__all__ = ["Decision", "Index", "Outcome", "Reason", "compile"]


class Reason(enum.IntEnum):
    """Why a destination was allowed or blocked; values equal consent.v1.Reason."""

    UNSPECIFIED = 0
    NO_CONSENT = 1
    UNMAPPED = 2
    GRANTED = 3
    DENIED = 4
    EXEMPT = 5
    UNKNOWN_DESTINATION = 6
    DISABLED_BY_EVENT = 7
    PREFERENCE_EVENT = 8


@dataclass(frozen=True, slots=True)
class Decision:
    """The explained decision for one destination, as named in the request."""

    destination: str
    allowed: bool
    reason: Reason
    required_categories: tuple[str, ...] = ()
    missing_categories: tuple[str, ...] = ()
    shadow_missing_categories: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    """One event's answer: destinations in request order; `decisions` only when explained."""

    allowed: tuple[str, ...]
    blocked: tuple[str, ...]
    decisions: tuple[Decision, ...] | None = None


PREFERENCE_EVENT_NAME: Final = "Segment Consent Preference Updated"

# A row of the table: (exempt, resolution is any, required mask, shadow mask). `relevant` (per
# destination, beside the rows) = required | shadow: the only granted bits its decision reads.
_Row = tuple[bool, bool, int, int]

# The memos are two generations each (young, old): a hit in old is promoted to young, and when young
# is full it becomes old and the previous old is dropped. Entries in steady use survive a rotation
# (unlike clearing everything at once), memory stays bounded by twice one generation, and a lookup
# is one or two dict probes. Limits are per generation.
_MEMO_LIMIT: Final = 2048  # (granted, destinations) entries per generation
# Destination ids held by the keys of one generation of the request memos: entries alone do not
# bound memory (2048 requests of 10,000 long ids would pin gigabytes).
_MEMO_MAX_DESTINATIONS: Final = 1 << 15
_EXPLAIN_MEMO_LIMIT: Final = 4096  # (destination, relevant granted bits) -> Decision, per generation


def _names(mask: int, names: tuple[str, ...]) -> tuple[str, ...]:
    """The names of the set bits of `mask`, lowest bit first; one step per set bit, not per bit."""
    out = []
    while mask:
        low = mask & -mask
        out.append(names[low.bit_length() - 1])
        mask ^= low
    return tuple(out)


class Index:
    """An immutable, compiled mapping. Build with `compile`; share freely between threads.

    The memos inside are caches of pure functions of their keys: threads may race on them and
    lose an entry, never get a wrong answer.
    """

    __slots__ = (
        "_bits",
        "_cat_names",
        "_deny_unknown",
        "_memo",
        "_memo_destinations",
        "_memo_explain",
        "_memo_explain_old",
        "_memo_explained",
        "_memo_explained_destinations",
        "_memo_explained_old",
        "_memo_old",
        "_relevant",
        "_rows",
        "_shadow_names",
        "digest",
        "known_destinations",
        "mapping",
    )

    def __init__(self, mapping: ConsentMapping) -> None:
        self.mapping: Final = mapping
        self.digest: Final = mapping.digest()
        self.known_destinations: Final = mapping.known_destinations()
        self._deny_unknown = mapping.settings.unknown_destinations is UnknownDestinations.DENY
        # Only enabled categories take a bit: disabled ones are not enforced at all.
        enabled = [c for c in mapping.categories if c.enabled]
        self._cat_names = tuple(c.id for c in enabled)
        self._bits: dict[str, int] = {c.id: 1 << i for i, c in enumerate(enabled)}
        self._shadow_names = frozenset(c.id for c in enabled if c.shadow)
        required: dict[str, int] = dict.fromkeys(self.known_destinations, 0)
        shadow: dict[str, int] = dict.fromkeys(self.known_destinations, 0)
        for c in enabled:
            target = shadow if c.shadow else required
            bit = self._bits[c.id]
            for d in c.destinations:
                target[d] |= bit
        settings = mapping.destinations
        exempt_or_any = {
            d: (not s.enforce, s.resolution is Resolution.ANY) for d, s in settings.items()
        }
        plain = (False, False)
        self._rows: dict[str, _Row] = {
            d: (*exempt_or_any.get(d, plain), required[d], shadow[d]) for d in self.known_destinations
        }
        self._relevant: dict[str, int] = {d: required[d] | shadow[d] for d in self.known_destinations}
        # (granted, destinations) -> Outcome without decisions; granted None = no consent object.
        self._memo: dict[tuple[int | None, tuple[str, ...]], Outcome] = {}
        self._memo_old: dict[tuple[int | None, tuple[str, ...]], Outcome] = {}
        self._memo_destinations = 0  # ids held by the young generation's keys (approximate under threads)
        # The same for explained outcomes (decisions filled).
        self._memo_explained: dict[tuple[int | None, tuple[str, ...]], Outcome] = {}
        self._memo_explained_old: dict[tuple[int | None, tuple[str, ...]], Outcome] = {}
        self._memo_explained_destinations = 0
        # (destination as named, granted & relevant bits; -1 = no consent object) -> Decision.
        self._memo_explain: dict[tuple[str, int], Decision] = {}
        self._memo_explain_old: dict[tuple[str, int], Decision] = {}

    # -- consent -> mask -------------------------------------------------------------------

    def granted_mask(self, preferences: Mapping[str, bool]) -> int:
        """The bits of the enabled categories granted `True`; unknown ids are ignored."""
        bits = self._bits
        g = 0
        for k, v in preferences.items():
            if v is True:
                b = bits.get(k)
                if b is not None:
                    g |= b
        return g

    def category_ids(self, mask: int) -> tuple[str, ...]:
        """The enabled category ids named by `mask`, in mapping order."""
        return _names(mask, self._cat_names)

    @property
    def all_categories_mask(self) -> int:
        """Every enabled category's bit (shadow ones included)."""
        return (1 << len(self._cat_names)) - 1

    def is_shadow(self, category_id: str) -> bool:
        """Whether `category_id` is an enabled category in dry run."""
        return category_id in self._shadow_names

    def clear_memo(self) -> None:
        """Empties every memo (benchmarks measure the cost of a miss with it)."""
        for memo in (self._memo, self._memo_old, self._memo_explained, self._memo_explained_old,
                     self._memo_explain, self._memo_explain_old):
            memo.clear()
        self._memo_destinations = self._memo_explained_destinations = 0

    # -- the decision --------------------------------------------------------------------

    def _base(self, destination: str) -> str | None:
        """The known destination `destination` decides as (itself, or the part before `/`), or None."""
        if destination in self._rows:
            return destination
        if "/" in destination:  # `<destination>/<instance>` decides as <destination>
            base = destination.split("/", 1)[0]
            if base in self._rows:
                return base
        return None

    def _row(self, destination: str) -> _Row | None:
        row = self._rows.get(destination)
        if row is None and "/" in destination:  # `<destination>/<instance>` decides as <destination>
            row = self._rows.get(destination.split("/", 1)[0])
        return row

    def _allowed(self, granted: int, destination: str) -> bool:
        row = self._row(destination)
        if row is None:
            return not self._deny_unknown
        exempt, any_, req, _ = row
        if exempt or not req:
            return True
        if any_:
            return bool(req & granted)
        return req & granted == req

    def _explain(self, granted: int | None, destination: str) -> Decision:
        """The full decision; granted None = no consent object."""
        row = self._row(destination)
        if row is None:
            if granted is not None and self._deny_unknown:
                return Decision(destination, False, Reason.UNKNOWN_DESTINATION)
            return Decision(destination, True, Reason.NO_CONSENT if granted is None else Reason.UNMAPPED)
        exempt, any_, req, shadow = row
        names = self._cat_names
        g = 0 if granted is None else granted
        required = _names(req, names)
        missing = _names(req & ~g, names)
        if granted is None:
            return Decision(destination, True, Reason.NO_CONSENT, required, missing)
        if exempt:
            return Decision(destination, True, Reason.EXEMPT, required, missing)
        # A shadow category "would have blocked" when enforcing it alongside the real ones blocks.
        shadow_missing: tuple[str, ...] = ()
        if shadow:
            if any_:
                if not (req | shadow) & g:
                    shadow_missing = _names(shadow & ~g, names)
            elif shadow & ~g:
                shadow_missing = _names(shadow & ~g, names)
        if not req:
            return Decision(destination, True, Reason.UNMAPPED, (), (), shadow_missing)
        ok = bool(req & g) if any_ else req & g == req
        return Decision(
            destination, ok, Reason.GRANTED if ok else Reason.DENIED, required, missing, shadow_missing
        )

    def decide(
        self,
        preferences: Mapping[str, bool] | None,
        destinations: Sequence[str] = (),
        *,
        integrations: Mapping[str, object] | None = None,
        preference_event: bool = False,
        explain: bool = False,
    ) -> Outcome:
        """Decides one event (API.md §1).

        preferences: the consent object's categoryPreferences; None = no consent object.
        destinations: as requested (instances allowed); empty = every known destination.
        integrations: the event's `integrations` object, applied after consent.
        preference_event: a "Segment Consent Preference Updated" track event.
        Inputs are assumed valid (see consent_core.event); this is the hot path.
        """
        granted = None if preferences is None else self.granted_mask(preferences)
        dests = tuple(destinations) if destinations else self.known_destinations
        if not (explain or integrations or preference_event):  # the common case: one probe, no more calls
            hit = self._memo.get((granted, dests))
            return self._split(granted, dests) if hit is None else hit
        return self.decide_mask(
            granted, dests, integrations=integrations, preference_event=preference_event, explain=explain
        )

    def decide_mask(
        self,
        granted: int | None,
        destinations: tuple[str, ...],
        *,
        integrations: Mapping[str, object] | None = None,
        preference_event: bool = False,
        explain: bool = False,
    ) -> Outcome:
        """`decide` with the consent already reduced to `granted_mask` (None = no consent object).

        `destinations` is a tuple (a memo key); empty = every known destination. Memoised per
        (granted, destinations) when `integrations` is empty and this is no preference event.
        """
        dests = destinations or self.known_destinations
        if preference_event:
            decisions = [Decision(d, True, Reason.PREFERENCE_EVENT) for d in dests]
            out = self._finish(decisions, integrations)
            return out if explain else Outcome(out.allowed, out.blocked)
        if explain:
            if integrations:
                return self._finish(self._explained(granted, dests), integrations)
            return self._explained_outcome(granted, dests)
        plain = self._split(granted, dests)
        if integrations:
            # A destination's consent verdict depends only on its string, so a set is exact.
            consent_blocked = set(plain.blocked)
            all_off = integrations.get("All") is False
            al: list[str] = []
            bl: list[str] = []
            for d in dests:
                ok = d not in consent_blocked and _event_allows(integrations, all_off, d)
                (al if ok else bl).append(d)
            return Outcome(tuple(al), tuple(bl))
        return plain

    def _split(self, granted: int | None, dests: tuple[str, ...]) -> Outcome:
        """(allowed, blocked) by consent alone, memoised per snapshot."""
        key = (granted, dests)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        hit = self._memo_old.get(key)
        if hit is None:
            if granted is None:
                hit = Outcome(dests, ())
            else:
                al: list[str] = []
                bl: list[str] = []
                allowed = self._allowed
                for d in dests:
                    (al if allowed(granted, d) else bl).append(d)
                hit = Outcome(tuple(al), tuple(bl))
        n = len(dests)
        if n <= _MEMO_MAX_DESTINATIONS:
            if len(self._memo) >= _MEMO_LIMIT or self._memo_destinations + n > _MEMO_MAX_DESTINATIONS:
                self._memo_old = self._memo
                self._memo = {}
                self._memo_destinations = 0
            self._memo[key] = hit
            self._memo_destinations += n
        return hit

    def _explained_outcome(self, granted: int | None, dests: tuple[str, ...]) -> Outcome:
        """The explained outcome by consent alone, memoised per snapshot like `_split`."""
        key = (granted, dests)
        hit = self._memo_explained.get(key)
        if hit is not None:
            return hit
        hit = self._memo_explained_old.get(key)
        if hit is None:
            hit = self._finish(self._explained(granted, dests), None)
        n = len(dests)
        if n <= _MEMO_MAX_DESTINATIONS:
            if (len(self._memo_explained) >= _MEMO_LIMIT
                    or self._memo_explained_destinations + n > _MEMO_MAX_DESTINATIONS):
                self._memo_explained_old = self._memo_explained
                self._memo_explained = {}
                self._memo_explained_destinations = 0
            self._memo_explained[key] = hit
            self._memo_explained_destinations += n
        return hit

    def _explained(self, granted: int | None, dests: tuple[str, ...]) -> list[Decision]:
        """One Decision per destination, memoised on (destination, the granted bits it reads)."""
        memo = self._memo_explain
        relevant = self._relevant
        out = []
        for d in dests:
            if granted is None:
                key = (d, -1)
            else:
                r = relevant.get(d)
                if r is None:
                    base = self._base(d)
                    r = 0 if base is None else relevant[base]
                key = (d, granted & r)
            dec = memo.get(key)
            if dec is None:
                dec = self._memo_explain_old.get(key)
                if dec is None:
                    dec = self._explain(granted, d)
                if len(memo) >= _EXPLAIN_MEMO_LIMIT:
                    self._memo_explain_old = memo
                    self._memo_explain = memo = {}
                memo[key] = dec
            out.append(dec)
        return out

    def _finish(self, decisions: list[Decision], integrations: Mapping[str, object] | None) -> Outcome:
        """Applies the event's `integrations` object, then splits into allowed/blocked in request order."""
        if integrations:
            all_off = integrations.get("All") is False
            for i, dec in enumerate(decisions):
                # Consent first: a destination it blocked stays blocked.
                if dec.allowed and not _event_allows(integrations, all_off, dec.destination):
                    decisions[i] = Decision(
                        dec.destination, False, Reason.DISABLED_BY_EVENT, dec.required_categories,
                        dec.missing_categories, dec.shadow_missing_categories,
                    )
        return Outcome(
            tuple(dec.destination for dec in decisions if dec.allowed),
            tuple(dec.destination for dec in decisions if not dec.allowed),
            tuple(decisions),
        )


def _event_allows(integrations: Mapping[str, object], all_off: bool, destination: str) -> bool:
    """Segment's `integrations` rule: `false` blocks; under "All": false only true or an object passes."""
    v = integrations.get(destination.split("/", 1)[0], _MISSING)
    if v is False:
        return False
    return not all_off or v is True or isinstance(v, dict)


_MISSING: Final = object()


def compile(mapping: ConsentMapping) -> Index:
    """Compiles a validated mapping into its decision table."""
    return Index(mapping)
