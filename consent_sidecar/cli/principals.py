"""`consent-sidecar principals add|remove`: admin identities in the principals file, without editing YAML by hand.

`add` prints a fresh random token once, on stdout (so `TOKEN=$(...)` captures it), and writes
only its sha256; `remove` drops an identity. Both keep the file's comments and replace it
atomically (consent_sidecar.auth.principals_edit); a running sidecar picks the change up at its
next reload of the file. Must never print a token anywhere else, nor take one as a flag value.
"""

from __future__ import annotations

import argparse
import sys

from consent_sidecar.auth.principals import Role
from consent_sidecar.cli.flags import PROG, Verbs, group, verb

__all__ = ["register", "run_principals_add", "run_principals_remove"]


def register(verbs: Verbs) -> None:
    principals = group(verbs, "principals", "admin identities in the principals file (owners write, members read)")
    p = verb(principals, "add", run_principals_add,
             "add an identity: prints its new token once and writes only the token's sha256")
    p.add_argument("--principals", required=True, metavar="FILE", help="the principals file (created if missing)")
    p.add_argument("--id", required=True, metavar="ID", help="the identity, e.g. bob (the audit trail's actor)")
    p.add_argument("--role", required=True, choices=("owner", "member"), help="owner: read and write; member: read")

    p = verb(principals, "remove", run_principals_remove,
             "remove an identity; a running sidecar refuses its token from its next reload on")
    p.add_argument("--principals", required=True, metavar="FILE", help="the principals file")
    p.add_argument("--id", required=True, metavar="ID", help="the identity to remove")


def run_principals_add(ns: argparse.Namespace) -> int:
    from consent_sidecar.auth.principals_edit import PrincipalsEditError, add_principal

    try:
        added = add_principal(ns.principals, ns.id, Role(ns.role))
    except PrincipalsEditError as e:
        print(str(e), file=sys.stderr)
        return 1
    except OSError as e:
        print(f"{PROG} principals add: {ns.principals}: cannot write: {e.strerror or e}", file=sys.stderr)
        return 1
    print(added.token)
    made = " (created)" if added.created else ""
    print(f"{PROG}: added {added.id} ({added.role.value}) to {ns.principals}{made}; "
          "the token above is shown only this once", file=sys.stderr)
    return 0


def run_principals_remove(ns: argparse.Namespace) -> int:
    from consent_sidecar.auth.principals_edit import PrincipalsEditError, remove_principal

    try:
        remove_principal(ns.principals, ns.id)
    except PrincipalsEditError as e:
        print(str(e), file=sys.stderr)
        return 1
    except OSError as e:
        print(f"{PROG} principals remove: {ns.principals}: cannot write: {e.strerror or e}", file=sys.stderr)
        return 1
    print(f"removed {ns.id} from {ns.principals}")
    return 0
