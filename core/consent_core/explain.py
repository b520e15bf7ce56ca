"""Explained decisions: one `Decision` per destination (reason, required, missing, shadow categories); pure.

The slower path, taken when a caller asks why (explain, metrics, decision logs) or an event
carries `integrations` or is a preference event. Built from the index's compiled rows;
memoised per (destination, the granted bits it reads) and per (granted, destinations), within
the byte budget given. Never does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from consent_core.memo import Memo, MemoStats
from consent_core.outcome import Decision, Outcome, Reason

__all__ = ["ENTRY_BYTES", "ID_BYTES", "Explainer", "Row", "event_allows", "finish", "names"]

# A row of the table: (exempt, resolution is any, required mask, shadow mask).
Row = tuple[bool, bool, int, int]

# Estimated bytes a memo entry keeps alive, beyond its ids' characters: dict slot, entry and key
# tuples, the Outcome and its two tuples (~300), per id a pointer in the key, one in allowed or
# blocked and a str header (~70); an explained entry adds one Decision per id (~160 with its tuples).
ENTRY_BYTES: Final = 300
ID_BYTES: Final = 70
_DECISION_BYTES: Final = 160


def names(mask: int, names: tuple[str, ...]) -> tuple[str, ...]:
    """The names of the set bits of `mask`, lowest bit first; one step per set bit, not per bit."""
    out = []
    while mask:
        low = mask & -mask
        out.append(names[low.bit_length() - 1])
        mask ^= low
    return tuple(out)


def event_allows(integrations: Mapping[str, object], all_off: bool, destination: str) -> bool:
    """Segment's `integrations` rule: `false` blocks; under "All": false only true or an object passes."""
    v = integrations.get(destination.split("/", 1)[0], _MISSING)
    if v is False:
        return False
    return not all_off or v is True or isinstance(v, dict)


_MISSING: Final = object()


class Explainer:
    """Explained decisions of one snapshot. Threads may race on its memos, never get a wrong answer."""

    __slots__ = ("_cat_names", "_decisions", "_deny_unknown", "_outcomes", "_relevant", "_rows")

    def __init__(
        self, rows: dict[str, Row], cat_names: tuple[str, ...], deny_unknown: bool, outcomes_budget: int,
        decisions_budget: int,
    ) -> None:
        self._rows = rows
        self._cat_names = cat_names
        self._deny_unknown = deny_unknown
        # Per destination: the only granted bits its decision reads (required | shadow).
        self._relevant = {d: req | shadow for d, (_, _, req, shadow) in rows.items()}
        # (granted, destinations) -> Outcome with decisions; granted None = no consent object.
        self._outcomes: Memo[tuple[int | None, tuple[str, ...]], Outcome] = Memo(outcomes_budget)
        # (destination as named, granted & relevant bits; -1 = no consent object) -> Decision.
        self._decisions: Memo[tuple[str, int], Decision] = Memo(decisions_budget)

    def memos(self) -> list[MemoStats]:
        return [self._outcomes.stats(), self._decisions.stats()]

    def clear(self) -> None:
        self._outcomes.clear()
        self._decisions.clear()

    def _base(self, destination: str) -> str | None:
        """The known destination `destination` decides as (itself, or the part before `/`), or None."""
        if destination in self._rows:
            return destination
        if "/" in destination:  # `<destination>/<instance>` decides as <destination>
            base = destination.split("/", 1)[0]
            if base in self._rows:
                return base
        return None

    def explain(self, granted: int | None, destination: str) -> Decision:
        """The full decision; granted None = no consent object."""
        base = self._base(destination)
        if base is None:
            if granted is not None and self._deny_unknown:
                return Decision(destination, False, Reason.UNKNOWN_DESTINATION)
            return Decision(destination, True, Reason.NO_CONSENT if granted is None else Reason.UNMAPPED)
        exempt, any_, req, shadow = self._rows[base]
        cats = self._cat_names
        g = 0 if granted is None else granted
        required = names(req, cats)
        missing = names(req & ~g, cats)
        if granted is None:
            return Decision(destination, True, Reason.NO_CONSENT, required, missing)
        if exempt:
            return Decision(destination, True, Reason.EXEMPT, required, missing)
        # A shadow category "would have blocked" when enforcing it alongside the real ones blocks.
        shadow_missing: tuple[str, ...] = ()
        if shadow:
            if any_:
                if not (req | shadow) & g:
                    shadow_missing = names(shadow & ~g, cats)
            elif shadow & ~g:
                shadow_missing = names(shadow & ~g, cats)
        if not req:
            return Decision(destination, True, Reason.UNMAPPED, (), (), shadow_missing)
        ok = bool(req & g) if any_ else req & g == req
        return Decision(
            destination, ok, Reason.GRANTED if ok else Reason.DENIED, required, missing, shadow_missing
        )

    def outcome(self, granted: int | None, dests: tuple[str, ...]) -> Outcome:
        """The explained outcome by consent alone, memoised per snapshot."""
        memo = self._outcomes
        key = (granted, dests)
        hit = memo.get(key)
        if hit is None:
            hit = finish(self.decisions(granted, dests), None)
            memo.put(key, hit, ENTRY_BYTES + (ID_BYTES + _DECISION_BYTES) * len(dests) + sum(map(len, dests)))
        return hit

    def decisions(self, granted: int | None, dests: tuple[str, ...]) -> list[Decision]:
        """One Decision per destination, memoised on (destination, the granted bits it reads)."""
        memo = self._decisions
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
            e = memo.young.get(key)
            if e is not None:
                dec = e[0]
            else:
                got = memo.get(key)
                if got is None:
                    got = self.explain(granted, d)
                    memo.put(key, got, _DECISION_BYTES + 2 * len(d) + 100)
                dec = got
            out.append(dec)
        return out


def finish(decisions: list[Decision], integrations: Mapping[str, object] | None) -> Outcome:
    """Applies the event's `integrations` object, then splits into allowed/blocked in request order."""
    if integrations:
        all_off = integrations.get("All") is False
        for i, dec in enumerate(decisions):
            # Consent first: a destination it blocked stays blocked.
            if dec.allowed and not event_allows(integrations, all_off, dec.destination):
                decisions[i] = Decision(
                    dec.destination, False, Reason.DISABLED_BY_EVENT, dec.required_categories,
                    dec.missing_categories, dec.shadow_missing_categories,
                )
    return Outcome(
        tuple(dec.destination for dec in decisions if dec.allowed),
        tuple(dec.destination for dec in decisions if not dec.allowed),
        tuple(decisions),
    )
