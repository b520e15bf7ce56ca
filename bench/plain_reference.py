"""The plain decider a reader would write in 30 lines: the bar the compiled index must clear.

Per destination a precomputed frozenset of required categories and an `any` flag; per event
the set of granted ids; one loop. Allowed/blocked only (no explain, no `integrations`), no
validation, no memo. `bench index` times it beside `Index.decide` and `EmbeddedDecider` in
the same run: a compiled table that loses to this has not earned its name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from consent_core.model import ConsentMapping, Resolution, UnknownDestinations

__all__ = ["PlainDecider"]

_FREE = (frozenset[str](), False)  # exempt or unmapped: nothing required


class PlainDecider:
    def __init__(self, mapping: ConsentMapping) -> None:
        required: dict[str, set[str]] = {d: set() for d in mapping.known_destinations()}
        for c in mapping.categories:
            if c.enabled and not c.shadow:
                for d in c.destinations:
                    required[d].add(c.id)
        self.rows: dict[str, tuple[frozenset[str], bool]] = {}
        for d, req in required.items():
            s = mapping.destinations.get(d)
            exempt = s is not None and not s.enforce
            any_ = s is not None and s.resolution is Resolution.ANY
            self.rows[d] = _FREE if exempt or not req else (frozenset(req), any_)
        self.deny_unknown = mapping.settings.unknown_destinations is UnknownDestinations.DENY

    def decide(
        self, preferences: Mapping[str, bool] | None, destinations: Sequence[str]
    ) -> tuple[list[str], list[str]]:
        if preferences is None:
            return list(destinations), []
        granted = {k for k, v in preferences.items() if v is True}
        allowed: list[str] = []
        blocked: list[str] = []
        rows = self.rows
        for d in destinations:
            row = rows.get(d.split("/", 1)[0] if "/" in d else d)
            if row is None:
                ok = not self.deny_unknown
            else:
                req, any_ = row
                ok = not req or (not req.isdisjoint(granted) if any_ else req <= granted)
            (allowed if ok else blocked).append(d)
        return allowed, blocked
