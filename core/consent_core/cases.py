"""Decision cases for `consent-sidecar test`: parse a cases file (with positions) and run it against an Index.

Owns the cases-file format (docs/reference.md, "Command line", plus `expect.reasons`) and the verdict of each case;
`parse_cases` and `run_cases` are pure (`load_cases` only reads the file). Never prints: the
CLI formats the results.

```yaml
cases:
  - name: ads need targeting consent
    consent: {C0001: true, C0004: false}     # categoryPreferences; omit = no consent object
    # segment_event: {context: {consent: {categoryPreferences: {...}}}}   (instead of consent)
    destinations: [google-ads, amplitude]     # omit or [] = every known destination
    expect:                                   # each key omitted is not checked
      allowed: [amplitude]                    # exact list, request order
      blocked: [google-ads]
      reasons: {google-ads: REASON_DENIED}    # extension: the Decision.reason of that destination
```
"""

from __future__ import annotations

import json
import math
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from consent_core.documents import load_yaml, read_utf8
from consent_core.documents import node_position as _pos
from consent_core.errors import CasesError, InvalidArgument, Problem
from consent_core.event import decide_one
from consent_core.index import Decision, Index, Reason
from consent_core.limits import Limits

__all__ = ["Case", "CaseResult", "CasesError", "load_cases", "parse_cases", "reason_name", "run_cases"]

_CASE_KEYS = ("name", "consent", "segment_event", "destinations", "expect")
_EXPECT_KEYS = ("allowed", "blocked", "reasons")
_DEFAULT_LIMITS = Limits()


def reason_name(reason: Reason) -> str:
    """The consent.v1 enum name of a reason, e.g. "REASON_GRANTED"."""
    return f"REASON_{reason.name}"


@dataclass(frozen=True, slots=True)
class Case:
    """One decision case; an expectation left as None is not checked."""

    name: str
    destinations: tuple[str, ...] = ()
    consent: Mapping[str, bool] | None = None  # categoryPreferences; None = no consent object
    segment_event: bytes | None = None  # raw JSON, as DecideRequest.segment_event
    allowed: tuple[str, ...] | None = None
    blocked: tuple[str, ...] | None = None
    reasons: Mapping[str, Reason] | None = None  # destination (as requested) -> expected reason
    line: int | None = None  # 1-based line of the case in its file


@dataclass(frozen=True, slots=True)
class CaseResult:
    """The verdict of one case: `why` says what differed (expected vs got) when it failed."""

    case: Case
    passed: bool
    why: str = ""


# -- parsing ---------------------------------------------------------------------------------


class _Parser:
    """Walks the loaded YAML, collecting every problem rather than stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def problem(self, path: str, message: str, where: tuple[int | None, int | None]) -> None:
        self.problems.append(Problem(path, message, where[0], where[1]))

    def strings(self, value: Any, path: str, where: tuple[int | None, int | None]) -> tuple[str, ...] | None:
        if not isinstance(value, list):
            self.problem(path, f"must be a list of destination ids, got {_kind(value)}", where)
            return None
        out: list[str] = []
        ok = True
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                self.problem(f"{path}[{i}]", f"must be a non-empty string, got {_kind(item)}", _pos(value, i))
                ok = False
            else:
                out.append(item)
        return tuple(out) if ok else None

    def consent(self, value: Any, path: str, where: tuple[int | None, int | None]) -> Mapping[str, bool] | None:
        if not isinstance(value, dict):
            self.problem(
                path,
                f"must be a mapping of category id to true/false (omit it for no consent object), got {_kind(value)}",
                where,
            )
            return None
        prefs: dict[str, bool] = {}
        ok = True
        for k, v in value.items():
            if not isinstance(k, str):
                self.problem(path, f"category id {k!r} must be a string", _pos(value, k))
                ok = False
            elif not isinstance(v, bool):
                self.problem(f"{path}.{k}", f"must be true or false, got {_kind(v)}", _pos(value, k, value=True))
                ok = False
            else:
                prefs[k] = v
        return types.MappingProxyType(prefs) if ok else None

    def event(self, value: Any, path: str, where: tuple[int | None, int | None]) -> bytes | None:
        if not isinstance(value, dict):
            self.problem(path, f"must be a Segment event object, got {_kind(value)}", where)
            return None
        before = len(self.problems)
        plain = self.json_value(value, path, where)
        if len(self.problems) != before:
            return None
        return json.dumps(plain, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()

    def json_value(self, value: Any, path: str, where: tuple[int | None, int | None]) -> Any:
        """The plain JSON data of a YAML value, reporting what JSON cannot carry (dates, NaN, non-string keys)."""
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for k, v in value.items():
                if not isinstance(k, str):
                    self.problem(path, f"key {k!r} must be a string", _pos(value, k))
                    continue
                out[k] = self.json_value(v, f"{path}.{k}", _pos(value, k, value=True))
            return out
        if isinstance(value, list):
            return [self.json_value(v, f"{path}[{i}]", _pos(value, i)) for i, v in enumerate(value)]
        if value is None or isinstance(value, str | bool | int):
            return str(value) if isinstance(value, str) else value
        if isinstance(value, float):
            if not math.isfinite(value):
                self.problem(path, "must be a finite number (JSON has no NaN or infinity)", where)
            return float(value)
        self.problem(path, f"{_kind(value)} is not a JSON value (quote it to make it a string)", where)
        return None

    def expect(self, value: Any, path: str, where: tuple[int | None, int | None]) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.problem(path, f"must be a mapping with allowed, blocked and/or reasons, got {_kind(value)}", where)
            return None
        out: dict[str, Any] = {}
        for k in value:
            if k not in _EXPECT_KEYS:
                self.problem(f"{path}.{k}", f"unknown key (expected one of: {', '.join(_EXPECT_KEYS)})", _pos(value, k))
        if not any(k in value for k in _EXPECT_KEYS):
            self.problem(path, "must give at least one of: allowed, blocked, reasons", where)
        for k in ("allowed", "blocked"):
            if k in value:
                out[k] = self.strings(value[k], f"{path}.{k}", _pos(value, k, value=True))
        if "reasons" in value:
            out["reasons"] = self.reasons(value["reasons"], f"{path}.reasons", _pos(value, "reasons", value=True))
        return out

    def reasons(self, value: Any, path: str, where: tuple[int | None, int | None]) -> Mapping[str, Reason] | None:
        if not isinstance(value, dict):
            self.problem(path, f"must be a mapping of destination to reason name, got {_kind(value)}", where)
            return None
        out: dict[str, Reason] = {}
        for k, v in value.items():
            if not isinstance(k, str) or not k:
                self.problem(path, f"destination {k!r} must be a non-empty string", _pos(value, k))
                continue
            reason = _parse_reason(v)
            if reason is None:
                names = ", ".join(reason_name(r) for r in Reason if r is not Reason.UNSPECIFIED)
                where_v = _pos(value, k, value=True)
                self.problem(f"{path}.{k}", f"unknown reason {v!r} (expected one of: {names})", where_v)
                continue
            out[k] = reason
        return types.MappingProxyType(out)

    def case(self, value: Any, path: str, where: tuple[int | None, int | None], names: dict[str, str]) -> Case | None:
        if not isinstance(value, dict):
            self.problem(path, f"must be a mapping (name, consent, destinations, expect), got {_kind(value)}", where)
            return None
        before = len(self.problems)
        for k in value:
            if k not in _CASE_KEYS:
                self.problem(f"{path}.{k}", f"unknown key (expected one of: {', '.join(_CASE_KEYS)})", _pos(value, k))
        name = value.get("name")
        if "name" not in value:
            self.problem(path, "missing required key 'name'", where)
        elif not isinstance(name, str) or not name.strip():
            self.problem(
                f"{path}.name", f"must be a non-empty string, got {_kind(name)}", _pos(value, "name", value=True)
            )
        elif name in names:
            self.problem(f"{path}.name", f"duplicate case name {name!r} (first at {names[name]})",
                         _pos(value, "name", value=True))
        else:
            names[name] = path
        consent = None
        segment_event = None
        if "consent" in value and "segment_event" in value:
            self.problem(path, "give consent or segment_event, not both", _pos(value, "segment_event"))
        elif "consent" in value:
            consent = self.consent(value["consent"], f"{path}.consent", _pos(value, "consent", value=True))
        elif "segment_event" in value:
            segment_event = self.event(
                value["segment_event"], f"{path}.segment_event", _pos(value, "segment_event", value=True)
            )
        destinations: tuple[str, ...] | None = ()
        if "destinations" in value:
            destinations = self.strings(
                value["destinations"], f"{path}.destinations", _pos(value, "destinations", value=True)
            )
        expect: dict[str, Any] | None = None
        if "expect" not in value:
            self.problem(path, "missing required key 'expect'", where)
        else:
            expect = self.expect(value["expect"], f"{path}.expect", _pos(value, "expect", value=True))
        if len(self.problems) != before or expect is None or destinations is None or not isinstance(name, str):
            return None
        return Case(
            name=name,
            destinations=destinations,
            consent=consent,
            segment_event=segment_event,
            allowed=expect.get("allowed"),
            blocked=expect.get("blocked"),
            reasons=expect.get("reasons"),
            line=where[0],
        )


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _parse_reason(value: object) -> Reason | None:
    """REASON_GRANTED (the enum name) or GRANTED; never UNSPECIFIED."""
    if not isinstance(value, str):
        return None
    short = value.removeprefix("REASON_")
    reason = Reason.__members__.get(short)
    return None if reason is Reason.UNSPECIFIED else reason


def parse_cases(text: str, source: str | None = None) -> tuple[Case, ...]:
    """Parses a cases document; raises CasesError listing every problem with its line and column."""
    doc = load_yaml(text, source, CasesError)
    p = _Parser()
    if not isinstance(doc, dict):
        where = _pos(doc) if doc is not None else (1, 1)
        p.problem("", f"must be a mapping with a 'cases' list, got {_kind(doc)}", where)
        raise CasesError(p.problems, source)
    for k in doc:
        if k != "cases":
            p.problem(str(k), "unknown key (expected: cases)", _pos(doc, k))
    cases: list[Case] = []
    if "cases" not in doc:
        p.problem("", "missing required key 'cases'", _pos(doc))
    else:
        items = doc["cases"]
        where = _pos(doc, "cases", value=True)
        if not isinstance(items, list):
            p.problem("cases", f"must be a list of cases, got {_kind(items)}", where)
        elif not items:
            p.problem("cases", "must list at least one case", where)
        else:
            names: dict[str, str] = {}
            for i, item in enumerate(items):
                case = p.case(item, f"cases[{i}]", _pos(items, i), names)
                if case is not None:
                    cases.append(case)
    if p.problems:
        raise CasesError(p.problems, source)
    return tuple(cases)


def load_cases(path: str) -> tuple[Case, ...]:
    """Reads and parses a cases file; any problem (reading included) raises CasesError against `path` as given."""
    _, text, _ = read_utf8(path, "the cases file", CasesError)
    return parse_cases(text, path)


# -- running ---------------------------------------------------------------------------------


def _show(items: Sequence[str]) -> str:
    return json.dumps(list(items), ensure_ascii=False)


def run_case(index: Index, case: Case, limits: Limits = _DEFAULT_LIMITS) -> CaseResult:
    """Decides one case exactly as a DecideRequest would be, then compares with its expectations.

    A destination decided otherwise than expected is named with what it got and why (its reason
    and missing categories); the lists are compared whole only when every destination is right
    but their order is not.
    """
    try:
        outcome = decide_one(
            index, limits, case.destinations, preferences=case.consent, segment_event=case.segment_event,
            explain=True,
        )
    except InvalidArgument as e:
        return CaseResult(case, False, f"invalid request: {e}")
    why = _wrong_destinations(case, outcome.decisions or ())
    if not why:
        if case.allowed is not None and case.allowed != outcome.allowed:
            why.append(f"allowed: expected {_show(case.allowed)}, got {_show(outcome.allowed)}")
        if case.blocked is not None and case.blocked != outcome.blocked:
            why.append(f"blocked: expected {_show(case.blocked)}, got {_show(outcome.blocked)}")
    if case.reasons is not None:
        got: dict[str, list[Reason]] = {}
        for d in outcome.decisions or ():
            got.setdefault(d.destination, []).append(d.reason)
        for dest, want in case.reasons.items():
            reasons = got.get(dest)
            if not reasons:
                why.append(f"reasons.{dest}: expected {reason_name(want)}, got no decision for {dest!r}")
            elif any(r is not want for r in reasons):
                shown = ", ".join(dict.fromkeys(reason_name(r) for r in reasons))
                why.append(f"reasons.{dest}: expected {reason_name(want)}, got {shown}")
    return CaseResult(case, not why, "; ".join(why))


def _wrong_destinations(case: Case, decisions: Sequence[Decision]) -> list[str]:
    """`google-ads expected blocked, got allowed (REASON_GRANTED)` for each destination decided otherwise."""
    if case.allowed is None and case.blocked is None:
        return []
    out: list[str] = []
    decided = {d.destination: d for d in decisions}
    for dest, d in decided.items():
        if case.allowed is not None and (dest in case.allowed) != d.allowed:
            expected_allowed = dest in case.allowed
        elif case.blocked is not None and (dest in case.blocked) == d.allowed:
            expected_allowed = dest not in case.blocked
        else:
            continue
        why = reason_name(d.reason)
        if d.missing_categories:
            why += f"; missing: {', '.join(d.missing_categories)}"
        if d.shadow_missing_categories:
            why += f"; shadow missing: {', '.join(d.shadow_missing_categories)}"
        out.append(f"{dest} expected {'allowed' if expected_allowed else 'blocked'}, "
                   f"got {'allowed' if d.allowed else 'blocked'} ({why})")
    for dest in dict.fromkeys((*(case.allowed or ()), *(case.blocked or ()))):
        if dest not in decided:
            out.append(f"{dest} expected {'allowed' if dest in (case.allowed or ()) else 'blocked'}, "
                       "got no decision (not in the case's destinations)")
    return out


def run_cases(index: Index, cases: Sequence[Case], limits: Limits = _DEFAULT_LIMITS) -> list[CaseResult]:
    """Runs every case against one snapshot, in file order."""
    return [run_case(index, c, limits) for c in cases]
