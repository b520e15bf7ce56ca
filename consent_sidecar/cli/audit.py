"""`consent-sidecar audit ...`: the audit trail, verified on disk (`verify`) or read from a sidecar (`list`, `watch`).

`verify` reads the trail through consent_sidecar.audit, imported only when it runs, and opens
it read-only (safe while a sidecar appends): it must never write to the trail. It checks the
chain, the anchor file beside the database and, with `--expect-head SEQ:HASH`, that the trail
still holds a head seen elsewhere (a cut-off tail is otherwise intact). `list` and `watch` ask
a running sidecar's AdminService (ListAuditEvents, every page; WatchAuditEvents, until
interrupted) through consent_sidecar.cli.connection, as owner or member.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from consent_sidecar.cli import connection, output, values
from consent_sidecar.cli.connection import AdminConnection
from consent_sidecar.cli.flags import PROG, Verbs, group, verb
from consent_sidecar.cli.store import add_etcd_flags, etcd_settings

__all__ = ["action_value", "register", "run_audit_list", "run_audit_verify", "run_audit_watch"]

_PAGE = 1000  # the largest page the sidecar serves


def register(verbs: Verbs) -> None:
    audit = group(verbs, "audit", "audit trail tools")
    p = verb(audit, "verify", run_audit_verify,
             "verify the audit trail's hash chain; exit 0 when intact, 1 naming the first broken sequence")
    p.add_argument("--audit-db", metavar="FILE", help="the audit trail SQLite database (or the fleet's, --etcd-*)")
    add_etcd_flags(p, required=False)
    p.add_argument("--expect-head", metavar="SEQ:HASH",
                   help="fail unless the trail still holds event SEQ with this hash (a head kept elsewhere: "
                        "GetPolicyStatus, the audit head metric or log line); finds a cut-off tail")

    p = verb(audit, "list", run_audit_list, "list a running sidecar's audit events, oldest first (every page)")
    p.add_argument("--category", metavar="ID", help="only events about this category")
    p.add_argument("--action", type=action_value, metavar="NAME",
                   help="only this action, e.g. CATEGORY_DISABLED or AUDIT_ACTION_CATEGORY_DISABLED")
    p.add_argument("--after", type=values.sequence, metavar="SEQ", help="only events after this sequence number")
    p.add_argument("--limit", type=values.positive_int, metavar="N", help="at most N events (default: all)")
    connection.add_flags(p)

    p = verb(audit, "watch", run_audit_watch,
             "print a running sidecar's audit events as they happen, one line each, until interrupted (Ctrl-C)")
    p.add_argument("--after", type=values.sequence, metavar="SEQ",
                   help="first print the events after this sequence number (default: only new ones)")
    connection.add_flags(p)


def action_value(text: str) -> int:
    """An AuditAction by name, with or without its AUDIT_ACTION_ prefix, any case."""
    from consent.v1 import admin_pb2

    enum = admin_pb2.AuditAction
    name = text.strip().upper().replace("-", "_")
    full = name if name.startswith("AUDIT_ACTION_") else f"AUDIT_ACTION_{name}"
    known = [str(n) for n in enum.keys()]  # noqa: SIM118 - a protobuf enum wrapper, not a dict
    if full == "AUDIT_ACTION_UNSPECIFIED" or full not in known:
        names = ", ".join(output.short_action(n) for n in known if not n.endswith("UNSPECIFIED"))
        raise argparse.ArgumentTypeError(f"unknown action {text!r} (one of: {names})")
    return int(enum.Value(full))


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

    from consent_sidecar.audit import parse_head

    try:
        expect = parse_head(ns.expect_head) if ns.expect_head else None
    except ValueError as e:
        ns.parser.error(f"argument --expect-head: {e}")

    async def run() -> object:
        client = EtcdClient(settings)
        try:
            return await EtcdTrail(client, Keys(settings.prefix)).verify_async(expect)
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


def _name(event: Any) -> str:
    from consent.v1 import admin_pb2

    action = int(event.action)
    return str(admin_pb2.AuditAction.Name(action)) if action in admin_pb2.AuditAction.values() else str(action)


def run_audit_list(ns: argparse.Namespace) -> int:
    from consent.v1 import admin_pb2

    limit: int | None = ns.limit

    def body(conn: AdminConnection) -> int:
        events: list[Any] = []
        token = ""
        while limit is None or len(events) < limit:
            size = _PAGE if limit is None else min(_PAGE, limit - len(events))
            page = conn.call("ListAuditEvents", admin_pb2.ListAuditEventsRequest(
                page_size=size, page_token=token, category_id=ns.category or "", action=ns.action or 0,  # type: ignore[arg-type]  # an enum value as int
                after_sequence=ns.after or 0,
            ))
            events.extend(page.events)
            if ns.output == "json":  # one object per line, printed page by page
                for e in page.events[: None if limit is None else limit]:
                    print(output.dumps(output.audit_json(e, _name(e)), indent=None))
            token = page.next_page_token
            if not token:
                break
        if ns.output != "json":
            shown = events if limit is None else events[:limit]
            print(output.table(output.AUDIT_HEADERS, (output.audit_row(e, _name(e)) for e in shown)))
        return connection.EXIT_OK

    return connection.run(ns, body)


def run_audit_watch(ns: argparse.Namespace) -> int:
    import grpc
    from consent.v1 import admin_pb2

    def body(conn: AdminConnection) -> int:
        request = admin_pb2.WatchAuditEventsRequest(after_sequence=ns.after or 0)
        # No deadline: a watch lasts until interrupted or until the sidecar ends it.
        stream = conn.stub.WatchAuditEvents(request, metadata=conn.metadata)
        try:
            for e in stream:
                name = _name(e)
                if ns.output == "json":
                    print(output.dumps(output.audit_json(e, name), indent=None), flush=True)
                else:
                    print(output.audit_line(e, name), flush=True)
        except KeyboardInterrupt:  # Ctrl-C is how a watch ends: a success
            stream.cancel()
            return connection.EXIT_OK
        except grpc.RpcError as e:
            if isinstance(e, grpc.Call) and e.code() == grpc.StatusCode.CANCELLED:
                return connection.EXIT_OK
            raise
        return connection.EXIT_OK

    return connection.run(ns, body)
