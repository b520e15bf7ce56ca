"""`check`, `test` and `decide`: the mapping file alone, no server: validate it, run cases, decide once.

A thin shell around the core (mapping_file, index, event, cases) that only formats what comes
back: errors as the core words them (`file:line:column: path: message`), exit 1 for an
unreadable or invalid file, 2 for a usage error. `decide --address` asks a running sidecar
instead, through consent_sidecar.cli.decide_remote (the same JSON). Must never open a socket
itself, nor write a file.
"""

from __future__ import annotations

import argparse
import json
import sys

from consent_core.cases import CasesError, load_cases, reason_name, run_cases
from consent_core.errors import InvalidArgument, MappingError
from consent_core.event import decide_one
from consent_core.index import Decision, Index, compile
from consent_core.limits import Limits
from consent_core.mapping_file import load_mapping
from consent_core.mapping_file.reader import DEFAULT_MAX_MAPPING_BYTES

from consent_sidecar.cli import values
from consent_sidecar.cli.flags import Verbs, verb

__all__ = ["decision_json", "load_index", "register", "run_check", "run_decide", "run_test"]


def register(verbs: Verbs) -> None:
    p = verb(verbs, "check", run_check, "validate a mapping file")
    p.add_argument("file", metavar="F", help="the mapping file")
    p.add_argument("--max-mapping-bytes", type=values.positive_int, default=DEFAULT_MAX_MAPPING_BYTES, metavar="N",
                   help="largest mapping file accepted, in bytes; a larger one is a mapping error")

    p = verb(verbs, "test", run_test, "run decision cases against a mapping file")
    p.add_argument("file", metavar="F", help="the mapping file")
    p.add_argument("cases", metavar="CASES", help="the cases file (YAML)")

    p = verb(verbs, "decide", run_decide,
             "make one decision, locally from a mapping file or by a running sidecar, and print it as JSON")
    p.add_argument("--mappings", metavar="FILE", help="decide locally from this mapping file")
    p.add_argument("--address", type=values.address, metavar="ADDR",
                   help="ask the DecisionService of a running sidecar instead (a --listen address; no token)")
    p.add_argument("--consent", type=values.preferences, metavar="JSON",
                   help="the categoryPreferences object, e.g. '{\"C0001\": true}' (default: no consent object)")
    p.add_argument("--event", metavar="FILE",
                   help="a whole Segment event (JSON) decided as segment_event: its consent, integrations and type")
    p.add_argument("--explain", action="store_true", help="list each destination's decision")
    p.add_argument("destinations", nargs="*", metavar="DEST", help="destinations to decide (default: every known one)")


def load_index(path: str) -> Index | None:
    """The compiled mapping, or None after printing why it could not be loaded."""
    try:
        return compile(load_mapping(path).mapping)
    except MappingError as e:  # reading problems included
        print(str(e), file=sys.stderr)
    except OSError as e:  # not expected from load_mapping; still never a traceback
        print(f"{path}: cannot read the mapping file: {e.strerror or e}", file=sys.stderr)
    return None


def run_check(ns: argparse.Namespace) -> int:
    from consent_core.lint import warnings

    try:
        loaded = load_mapping(ns.file, max_bytes=ns.max_mapping_bytes)
    except MappingError as e:  # reading problems included
        print(str(e), file=sys.stderr)
        return 1
    index = compile(loaded.mapping)
    for w in warnings(loaded.mapping, loaded.text):  # legal, but almost certainly a mistake: exit 0 all the same
        print(w.format(ns.file), file=sys.stderr)
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
        print(f"PASS {r.case.name}" if r.passed else f"FAIL {r.case.name}: {r.why}")
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


def _source(ns: argparse.Namespace) -> str:
    """"mappings" or "address": which one decides; a flag on the command line beats a variable."""
    parser: argparse.ArgumentParser = ns.parser
    given = [dest for dest in ("mappings", "address") if getattr(ns, dest) is not None]
    if len(given) == 2:
        from_env: set[str] = getattr(ns, "from_env", set())
        given = [dest for dest in given if dest not in from_env] or given
    if not given:
        parser.error("give --mappings FILE (decide locally) or --address ADDR (ask a running sidecar)")
    if len(given) == 2:
        parser.error("give --mappings FILE or --address ADDR, not both")
    if ns.consent is not None and ns.event is not None:
        parser.error("give --consent or --event, not both")
    return given[0]


def read_event(ns: argparse.Namespace) -> bytes | None:
    """The bytes of --event FILE (`-` = stdin), or None without it; a usage error when unreadable."""
    if ns.event is None:
        return None
    try:
        if ns.event == "-":
            return bytes(sys.stdin.buffer.read())
        with open(ns.event, "rb") as f:
            return f.read()
    except OSError as e:
        parser: argparse.ArgumentParser = ns.parser
        parser.error(f"argument --event: cannot read {ns.event}: {e.strerror or e}")


def print_decision(allowed: list[str], blocked: list[str], decisions: list[dict[str, object]]) -> None:
    """The JSON `decide` prints, locally or from a sidecar."""
    out = {"allowed": allowed, "blocked": blocked, "decisions": decisions}
    print(json.dumps(out, indent=2, ensure_ascii=False))


def run_decide(ns: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = ns.parser
    if _source(ns) == "address":
        from consent_sidecar.cli.decide_remote import run_decide_remote

        return run_decide_remote(ns, read_event(ns))
    event = read_event(ns)
    index = load_index(ns.mappings)
    if index is None:
        return 1
    try:
        outcome = decide_one(index, Limits(), ns.destinations, preferences=ns.consent, segment_event=event,
                             explain=ns.explain)
    except InvalidArgument as e:
        if event is not None:  # the event file's content, not the command line, is at fault
            print(f"{ns.event}: invalid event: {e}", file=sys.stderr)
            return 1
        parser.error(str(e))
    decisions = [decision_json(d) for d in outcome.decisions or ()] if ns.explain else []
    print_decision(list(outcome.allowed), list(outcome.blocked), decisions)
    return 0
