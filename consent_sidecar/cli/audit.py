"""`consent-sidecar audit ...`: tools for the audit trail (today `audit verify`).

Reads the trail through consent_sidecar.audit, imported only when a verb runs. Must never
write to the trail: `verify` opens it read-only, safe while a sidecar appends.
"""

from __future__ import annotations

import argparse
import sys

from consent_sidecar.cli.flags import PROG, Verbs, group, verb
from consent_sidecar.cli.store import add_etcd_flags, etcd_settings

__all__ = ["register", "run_audit_verify"]


def register(verbs: Verbs) -> None:
    audit = group(verbs, "audit", "audit trail tools")
    p = verb(audit, "verify", run_audit_verify,
             "verify the audit trail's hash chain; exit 0 when intact, 1 naming the first broken sequence")
    p.add_argument("--audit-db", metavar="FILE", help="the audit trail SQLite database (or the fleet's, --etcd-*)")
    add_etcd_flags(p, required=False)


def run_audit_verify(ns: argparse.Namespace) -> int:
    settings = etcd_settings(ns)
    if settings is None and not ns.audit_db:
        ns.parser.error("the following arguments are required: --audit-db (or CONSENT_SIDECAR_AUDIT_DB), "
                        "or --etcd-endpoints (or CONSENT_SIDECAR_ETCD_ENDPOINTS) for a fleet's trail")  # fmt: skip
    if settings is not None and ns.audit_db:
        ns.parser.error("argument --audit-db: not with --etcd-endpoints: give one trail to verify")
    if settings is not None:
        return _verify_etcd(ns)
    # Imported here: only this verb needs the audit store.
    from consent_sidecar.audit import AuditError, verify

    path: str = ns.audit_db
    try:
        result = verify(path)  # opened read-only: safe while a sidecar appends to it
    except AuditError as e:  # missing, not an audit database, unreadable
        print(f"{PROG} audit verify: error: {e}", file=sys.stderr)
        return 1
    if not result.ok:
        print(f"{path}: {result}", file=sys.stderr)
        return 1
    print(f"{path}: {result}")
    return 0


def _verify_etcd(ns: argparse.Namespace) -> int:
    """The fleet's trail in etcd: every event, link and the head (read-only)."""
    import asyncio

    from consent_core.errors import SidecarError

    from consent_sidecar.audit.etcd import EtcdTrail
    from consent_sidecar.etcd.client import EtcdClient
    from consent_sidecar.etcd.keys import Keys

    settings = etcd_settings(ns)
    assert settings is not None
    where = f"etcd:{settings.prefix}/audit"

    async def run() -> object:
        client = EtcdClient(settings)
        try:
            return await EtcdTrail(client, Keys(settings.prefix)).verify_async()
        finally:
            await client.close()

    try:
        result = asyncio.run(run())
    except (SidecarError, OSError, ValueError) as e:
        print(f"{PROG} audit verify: error: {e}", file=sys.stderr)
        return 1
    ok = getattr(result, "ok", False)
    print(f"{where}: {result}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1
