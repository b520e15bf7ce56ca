"""The compiled decision table: `compile(Mapping) -> Index` and `Index.decide`, the hot path; pure.

Work that depends only on the mapping happens here at compile time: category ids become bit
positions, each destination becomes one (exempt, any, required mask, shadow mask) row, and a
consent object becomes one granted mask. Decisions are memoised per snapshot on
(granted mask, destinations) because real traffic repeats both. Never does I/O or logging.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping as AbcMapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from sidecar.model import Mapping, Resolution, UnknownDestinations

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

# A row of the table: (exempt, resolution is any, required mask, shadow mask).
_Row = tuple[bool, bool, int, int]
_MEMO_LIMIT: Final = 4096  # entries per snapshot; cleared wholesale when full (cheap, bounded)
# Destination ids held by the keys of the (allowed, blocked) memo, all entries together: entries alone
# do not bound memory (4096 requests of 10,000 long ids would pin gigabytes).
_MEMO_MAX_DESTINATIONS: Final = 1 << 16


def _names(mask: int, names: tuple[str, ...]) -> tuple[str, ...]:
    out = []
    i = 0
    while mask:
        if mask & 1:
            out.append(names[i])
        mask >>= 1
        i += 1
    return tuple(out)


class Index:
    """An immutable, compiled mapping. Build with `compile`; share freely between threads."""

    __slots__ = (
        "_bits",
        "_cat_names",
        "_deny_unknown",
        "_memo",
        "_memo_destinations",
        "_memo_explain",
        "_rows",
        "digest",
        "known_destinations",
        "mapping",
    )

    def __init__(self, mapping: Mapping) -> None:
        self.mapping: Final = mapping
        self.digest: Final = mapping.digest()
        self.known_destinations: Final = mapping.known_destinations()
        self._deny_unknown = mapping.settings.unknown_destinations is UnknownDestinations.DENY
        # Only enabled categories take a bit: disabled ones are not enforced at all.
        enabled = [c for c in mapping.categories if c.enabled]
        self._cat_names = tuple(c.id for c in enabled)
        self._bits: dict[str, int] = {c.id: 1 << i for i, c in enumerate(enabled)}
        required: dict[str, int] = dict.fromkeys(self.known_destinations, 0)
        shadow: dict[str, int] = dict.fromkeys(self.known_destinations, 0)
        for c in enabled:
            target = shadow if c.shadow else required
            bit = self._bits[c.id]
            for d in c.destinations:
                target[d] |= bit
        rows: dict[str, _Row] = {}
        for d in self.known_destinations:
            s = mapping.destinations.get(d)
            exempt = s is not None and not s.enforce
            any_ = s is not None and s.resolution is Resolution.ANY
            rows[d] = (exempt, any_, required[d], shadow[d])
        self._rows = rows
        self._memo: dict[tuple[int, tuple[str, ...]], tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self._memo_destinations = 0  # ids held by self._memo's keys (approximate under threads)
        self._memo_explain: dict[tuple[int, str], Decision] = {}

    # -- consent -> mask -------------------------------------------------------------------

    def granted_mask(self, preferences: AbcMapping[str, bool]) -> int:
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

    # -- the decision --------------------------------------------------------------------

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
        preferences: AbcMapping[str, bool] | None,
        destinations: Sequence[str] = (),
        *,
        integrations: AbcMapping[str, object] | None = None,
        preference_event: bool = False,
        explain: bool = False,
    ) -> Outcome:
        """Decides one event (API.md §1).

        preferences: the consent object's categoryPreferences; None = no consent object.
        destinations: as requested (instances allowed); empty = every known destination.
        integrations: the event's `integrations` object, applied after consent.
        preference_event: a "Segment Consent Preference Updated" track event.
        Inputs are assumed valid (see sidecar.event); this is the hot path.
        """
        dests = tuple(destinations) if destinations else self.known_destinations
        if preference_event:
            decisions = [Decision(d, True, Reason.PREFERENCE_EVENT) for d in dests]
            out = self._finish(decisions, integrations)
            return out if explain else Outcome(out.allowed, out.blocked)
        granted = None if preferences is None else self.granted_mask(preferences)
        if explain:
            return self._finish(self._explained(granted, dests), integrations)
        allowed, blocked = (dests, ()) if granted is None else self._split(granted, dests)
        if integrations:
            # A destination's consent verdict depends only on its string, so a set is exact.
            consent_blocked = set(blocked)
            all_off = integrations.get("All") is False
            al: list[str] = []
            bl: list[str] = []
            for d in dests:
                ok = d not in consent_blocked and _event_allows(integrations, all_off, d)
                (al if ok else bl).append(d)
            return Outcome(tuple(al), tuple(bl))
        return Outcome(allowed, blocked)

    def _split(self, granted: int, dests: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(allowed, blocked) by consent alone, memoised per snapshot."""
        key = (granted, dests)
        hit = self._memo.get(key)
        if hit is None:
            al: list[str] = []
            bl: list[str] = []
            for d in dests:
                (al if self._allowed(granted, d) else bl).append(d)
            hit = (tuple(al), tuple(bl))
            n = len(dests)
            if n <= _MEMO_MAX_DESTINATIONS:
                if len(self._memo) >= _MEMO_LIMIT or self._memo_destinations + n > _MEMO_MAX_DESTINATIONS:
                    self._memo.clear()
                    self._memo_destinations = 0
                self._memo[key] = hit
                self._memo_destinations += n
        return hit

    def _explained(self, granted: int | None, dests: tuple[str, ...]) -> list[Decision]:
        if granted is None:
            return [self._explain(None, d) for d in dests]
        memo = self._memo_explain
        out = []
        for d in dests:
            key = (granted, d)
            dec = memo.get(key)
            if dec is None:
                dec = self._explain(granted, d)
                if len(memo) >= _MEMO_LIMIT:
                    memo.clear()
                memo[key] = dec
            out.append(dec)
        return out

    def _finish(self, decisions: list[Decision], integrations: AbcMapping[str, object] | None) -> Outcome:
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


def _event_allows(integrations: AbcMapping[str, object], all_off: bool, destination: str) -> bool:
    """Segment's `integrations` rule: `false` blocks; under "All": false only true or an object passes."""
    v = integrations.get(destination.split("/", 1)[0], _MISSING)
    if v is False:
        return False
    return not all_off or v is True or isinstance(v, dict)


_MISSING: Final = object()


def compile(mapping: Mapping) -> Index:
    """Compiles a validated mapping into its decision table."""
    return Index(mapping)
