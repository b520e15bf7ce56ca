"""`check`, `test` and `decide`: the mapping file alone, no server: validate it, run cases, decide once.

A thin shell around the core (mapping_file, index, event, cases) that only formats what comes
back: errors as the core words them (`file:line:column: path: message`), exit 1 for an
unreadable or invalid file, 2 for a usage error. Must never open a socket or write a file.
"""

from __future__ import annotations

import argparse
import json
import sys

from consent_core.cases import CasesError, load_cases, reason_name, run_cases
from consent_core.errors import InvalidArgument, MappingError, printable
from consent_core.event import decide_one
from consent_core.index import Decision, Index, compile
from consent_core.limits import Limits, MappingLimits
from consent_core.mapping_file import load_mapping

from consent_sidecar.cli import values
from consent_sidecar.cli.flags import Verbs, verb
from consent_sidecar.cli.serve import add_mapping_limits, mapping_limits

__all__ = ["decision_json", "load_index", "register", "run_check", "run_decide", "run_test"]


def register(verbs: Verbs) -> None:
    p = verb(verbs, "check", run_check, "validate a mapping file")
    p.add_argument("file", metavar="F", help="the mapping file")
    add_mapping_limits(p)

    p = verb(verbs, "test", run_test, "run decision cases against a mapping file")
    p.add_argument("file", metavar="F", help="the mapping file")
    p.add_argument("cases", metavar="CASES", help="the cases file (YAML)")

    p = verb(verbs, "decide", run_decide, "make one decision locally and print it as JSON")
    p.add_argument("--mappings", required=True, metavar="FILE", help="the mapping file")
    p.add_argument("--consent", type=values.preferences, metavar="JSON",
                   help="the categoryPreferences object, e.g. '{\"C0001\": true}' (default: no consent object)")
    p.add_argument("--explain", action="store_true", help="list each destination's decision")
    p.add_argument("destinations", nargs="*", metavar="DEST", help="destinations to decide (default: every known one)")


def load_index(path: str, limits: MappingLimits | None = None) -> Index | None:
    """The compiled mapping, or None after printing why it could not be loaded."""
    try:
        return compile(load_mapping(path, limits).mapping)
    except MappingError as e:  # reading problems included
        print(str(e), file=sys.stderr)
    except OSError as e:  # not expected from load_mapping; still never a traceback
        print(f"{path}: cannot read the mapping file: {e.strerror or e}", file=sys.stderr)
    return None


def run_check(ns: argparse.Namespace) -> int:
    index = load_index(ns.file, mapping_limits(ns))
    if index is None:
        return 1
    categories = len(index.mapping.categories)
    print(f"{ns.file}: ok ({categories} categories, {len(index.known_destinations)} destinations, "
          f"digest {index.digest[:12]})")
    return 0


def run_test(ns: argparse.Namespace) -> int:
    index = load_index(ns.file)
    if index is None:
        return 1
    try:
        cases = load_cases(ns.cases)
    except CasesError as e:  # reading problems included
        print(str(e), file=sys.stderr)
        return 1
    results = run_cases(index, cases)
    for r in results:
        line = f"PASS {r.case.name}" if r.passed else f"FAIL {r.case.name}: {r.why}"
        print(printable(line))
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def decision_json(d: Decision) -> dict[str, object]:
    """A Decision as `decide` prints it: the Decision message's fields, `reason` as its enum name."""
    return {
        "destination": d.destination,
        "allowed": d.allowed,
        "reason": reason_name(d.reason),
        "required_categories": list(d.required_categories),
        "missing_categories": list(d.missing_categories),
        "shadow_missing_categories": list(d.shadow_missing_categories),
    }


def run_decide(ns: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = ns.parser
    index = load_index(ns.mappings)
    if index is None:
        return 1
    try:
        outcome = decide_one(index, Limits(), ns.destinations, preferences=ns.consent, explain=ns.explain)
    except InvalidArgument as e:
        parser.error(str(e))
    out = {
        "allowed": list(outcome.allowed),
        "blocked": list(outcome.blocked),
        "decisions": [decision_json(d) for d in outcome.decisions or ()] if ns.explain else [],
    }
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0
