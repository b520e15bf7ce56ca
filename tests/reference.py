"""A naive, obviously-correct reference of docs/reference.md §1, the oracle for the compiled `Index`.

Written from the contract, not from `sidecar/index.py`: plain sets, lists and dicts, one
destination at a time, no bitmasks and no memo. Slow on purpose; the property tests in
`test_index.py` and `bench/bench_index.py` compare the real index against it.

Reading of the contract it encodes (each line is one sentence of docs/reference.md §1):

- No consent object: every destination allowed, `NO_CONSENT`, before every other row.
- A *known* destination appears in any category (enabled, disabled or shadow) or under
  `destinations:`; `<destination>/<instance>` is decided exactly as `<destination>`.
- Unknown: `UNMAPPED` (allowed), or `UNKNOWN_DESTINATION` (blocked) under `deny`.
- `enforce: false`: `EXEMPT` (allowed).
- required = enabled, non-shadow categories it is mapped to (mapping order); none: `UNMAPPED`.
- `all`: every required category granted `true`; `any`: at least one. Else `DENIED`.
- missing = required categories not granted, whatever the outcome.
- shadow_missing = the enabled shadow categories it is mapped to that are not granted,
  listed only when enforcing them too (same resolution) would have blocked it; never
  changes the outcome. Not evaluated when nothing is enforced (no consent, exempt).
- A preference event: every destination `PREFERENCE_EVENT`, empty lists.
- Then `integrations` (looked up by the base destination id): `false` blocks; `"All": false`
  blocks unless the value is `true` or an object. Only an allowed destination can be
  blocked by it (`DISABLED_BY_EVENT`, lists kept); a blocked one keeps its reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from consent_core.model import ConsentMapping, Resolution, UnknownDestinations

__all__ = ["RefDecision", "reference_decide", "reference_split"]

# Reason names, as in consent.v1.Reason without the REASON_ prefix.
BLOCKING_REASONS = frozenset({"DENIED", "UNKNOWN_DESTINATION", "DISABLED_BY_EVENT"})


@dataclass(frozen=True)
class RefDecision:
    destination: str
    allowed: bool
    reason: str
    required_categories: tuple[str, ...] = ()
    missing_categories: tuple[str, ...] = ()
    shadow_missing_categories: tuple[str, ...] = ()


def _known(mapping: ConsentMapping) -> set[str]:
    known = set(mapping.destinations.keys())
    for category in mapping.categories:
        for d in category.destinations:
            known.add(d)
    return known


def _passes(resolution: Resolution, categories: list[str], granted: set[str]) -> bool:
    if resolution is Resolution.ANY:
        return any(c in granted for c in categories)
    return all(c in granted for c in categories)


def _consent_decision(
    mapping: ConsentMapping, known: set[str], preferences: Mapping[str, bool] | None, asked: str
) -> RefDecision:
    base = asked.split("/")[0]
    required = [c.id for c in mapping.categories if c.enabled and not c.shadow and base in c.destinations]

    if preferences is None:
        # Nothing is enforced; nothing is granted either, so every required category is missing.
        if base not in known:
            return RefDecision(asked, True, "NO_CONSENT")
        return RefDecision(asked, True, "NO_CONSENT", tuple(required), tuple(required))

    if base not in known:
        if mapping.settings.unknown_destinations is UnknownDestinations.DENY:
            return RefDecision(asked, False, "UNKNOWN_DESTINATION")
        return RefDecision(asked, True, "UNMAPPED")

    granted = {category for category, value in preferences.items() if value is True}
    missing = [c for c in required if c not in granted]
    settings = mapping.destinations.get(base)
    enforce = True if settings is None else settings.enforce
    resolution = Resolution.ALL if settings is None else settings.resolution

    if not enforce:
        return RefDecision(asked, True, "EXEMPT", tuple(required), tuple(missing))

    shadows = [c.id for c in mapping.categories if c.enabled and c.shadow and base in c.destinations]
    shadow_missing: list[str] = []
    if shadows and not _passes(resolution, required + shadows, granted):
        shadow_missing = [c for c in shadows if c not in granted]

    if not required:
        return RefDecision(asked, True, "UNMAPPED", (), (), tuple(shadow_missing))
    ok = _passes(resolution, required, granted)
    return RefDecision(
        asked, ok, "GRANTED" if ok else "DENIED", tuple(required), tuple(missing), tuple(shadow_missing)
    )


def _event_allows(integrations: Mapping[str, object], asked: str) -> bool:
    base = asked.split("/")[0]
    if base in integrations and integrations[base] is False:
        return False
    if "All" in integrations and integrations["All"] is False:
        value = integrations.get(base)
        return value is True or isinstance(value, dict)
    return True


def reference_decide(
    mapping: ConsentMapping,
    preferences: Mapping[str, bool] | None,
    destinations: Sequence[str] = (),
    *,
    integrations: Mapping[str, object] | None = None,
    preference_event: bool = False,
) -> list[RefDecision]:
    """One decision per destination as requested (duplicates included); empty = every known one, sorted."""
    known = _known(mapping)
    asked_for = list(destinations) if destinations else sorted(known)
    out = []
    for asked in asked_for:
        if preference_event:
            decision = RefDecision(asked, True, "PREFERENCE_EVENT")
        else:
            decision = _consent_decision(mapping, known, preferences, asked)
        if integrations is not None and decision.allowed and not _event_allows(integrations, asked):
            decision = RefDecision(
                asked,
                False,
                "DISABLED_BY_EVENT",
                decision.required_categories,
                decision.missing_categories,
                decision.shadow_missing_categories,
            )
        assert decision.allowed == (decision.reason not in BLOCKING_REASONS)
        out.append(decision)
    return out


def reference_split(
    mapping: ConsentMapping,
    preferences: Mapping[str, bool] | None,
    destinations: Sequence[str] = (),
    *,
    integrations: Mapping[str, object] | None = None,
    preference_event: bool = False,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(allowed, blocked), each in request order."""
    decisions = reference_decide(
        mapping, preferences, destinations, integrations=integrations, preference_event=preference_event
    )
    return (
        tuple(d.destination for d in decisions if d.allowed),
        tuple(d.destination for d in decisions if not d.allowed),
    )
