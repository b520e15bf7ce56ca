"""`consent-sidecar audit ...`: tools for the audit trail (today `audit verify`).

Reads the trail through consent_sidecar.audit, imported only when a verb runs. Must never
write to the trail: `verify` opens it read-only, safe while a sidecar appends. `verify`
checks the chain, the anchor file beside the database and, with `--expect-head SEQ:HASH`,
that the trail still holds a head seen elsewhere (a cut-off tail is otherwise intact).
"""

from __future__ import annotations

import argparse
import sys

from consent_sidecar.cli.flags import PROG, Verbs, group, verb

__all__ = ["register", "run_audit_verify"]


def register(verbs: Verbs) -> None:
    audit = group(verbs, "audit", "audit trail tools")
    p = verb(audit, "verify", run_audit_verify,
             "verify the audit trail's hash chain; exit 0 when intact, 1 naming the first broken sequence")
    p.add_argument("--audit-db", required=True, metavar="FILE", help="the audit trail SQLite database")
    p.add_argument("--expect-head", metavar="SEQ:HASH",
                   help="fail unless the trail still holds event SEQ with this hash (a head kept elsewhere: "
                        "GetPolicyStatus, the audit head metric or log line); finds a cut-off tail")


def run_audit_verify(ns: argparse.Namespace) -> int:
    # Imported here: only this verb needs the audit store.
    from consent_sidecar.audit import AuditError, parse_head, verify

    path: str = ns.audit_db
    try:
        expect = parse_head(ns.expect_head) if ns.expect_head else None
    except ValueError as e:
        ns.parser.error(f"argument --expect-head: {e}")
    try:
        result = verify(path, expect_head=expect)  # opened read-only: safe while a sidecar appends to it
    except AuditError as e:  # missing, not an audit database, unreadable
        print(f"{PROG} audit verify: error: {e}", file=sys.stderr)
        return 1
    if not result.ok:
        print(f"{path}: {result}", file=sys.stderr)
        return 1
    print(f"{path}: {result}")
    return 0
