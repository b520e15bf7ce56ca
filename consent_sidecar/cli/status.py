"""`consent-sidecar status` and `fleet status`: what a running sidecar serves, and whether its fleet agrees.

`status` prints GetPolicyStatus; `fleet status` prints GetFleetStatus and exits 1 when a member
has served another digest than the store for longer than `--max-lag` (a file-backed sidecar has
no fleet: the sidecar answers FAILED_PRECONDITION, printed as any refusal, exit 1). Both go
through consent_sidecar.cli.connection. Must never change anything.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from consent_sidecar.cli import connection, output, values
from consent_sidecar.cli.connection import AdminConnection
from consent_sidecar.cli.flags import Verbs, group, verb

__all__ = ["DEFAULT_MAX_LAG", "Lagging", "lagging", "register", "run_fleet_status", "run_status"]

DEFAULT_MAX_LAG: Final = 30.0


def register(verbs: Verbs) -> None:
    p = verb(verbs, "status", run_status, "show the policy a running sidecar serves (GetPolicyStatus)")
    connection.add_flags(p)

    fleet = group(verbs, "fleet", "many sidecars on one fleet store")
    p = verb(fleet, "status", run_fleet_status,
             "show every sidecar of the fleet store and what it serves; exit 1 when one lags (GetFleetStatus)")
    p.add_argument("--max-lag", type=values.seconds, default=DEFAULT_MAX_LAG, metavar="SECONDS",
                   help="exit 1 when a member has served another digest than the store for longer than this")
    connection.add_flags(p)


def _status_json(s: Any) -> dict[str, object]:
    return {
        "policy": output.version_json(s.policy), "source": s.source, "loaded_at": output.timestamp(s.loaded_at),
        "reloads": s.reloads, "failed_reloads": s.failed_reloads, "last_error": s.last_error,
        "last_error_at": output.timestamp(s.last_error_at), "categories": s.categories,
        "destinations": s.destinations, "store": s.store, "store_connected": s.store_connected,
        "store_revision": s.store_revision, "disconnected_since": output.timestamp(s.disconnected_since),
        "audit_head_sequence": s.audit_head_sequence, "audit_head_hash": s.audit_head_hash,
    }


def run_status(ns: argparse.Namespace) -> int:
    from consent.v1 import admin_pb2

    def body(conn: AdminConnection) -> int:
        data = _status_json(conn.call("GetPolicyStatus", admin_pb2.GetPolicyStatusRequest()))
        if ns.output == "json":
            print(output.dumps(data))
            return connection.EXIT_OK
        rows = []
        for key, value in data.items():
            if key == "policy":
                rows += [("generation", data["policy"]["generation"]),  # type: ignore[index]
                         ("digest", data["policy"]["digest"])]  # type: ignore[index]
            elif value not in (None, "", 0) or key in ("reloads", "failed_reloads", "categories", "destinations"):
                rows.append((key.replace("_", " "), value))
        print(output.table(("FIELD", "VALUE"), rows))
        return connection.EXIT_OK

    return connection.run(ns, body)


@dataclass(frozen=True, slots=True)
class Lagging:
    member_id: str
    seconds: float  # since its record last changed while serving another digest


def lagging(fleet: Any, now: float, max_lag: float) -> list[Lagging]:
    """Members serving another digest than the store, unchanged for longer than `max_lag` seconds.

    A member's record is rewritten whenever what it serves changes, so `updated_at` is when it
    began serving the digest it reports: serving another digest than the store since then, and
    for longer than `max_lag`, is lagging.
    """
    out = []
    for m in fleet.members:
        if m.policy.digest == fleet.store_digest:
            continue
        since = m.updated_at.seconds + m.updated_at.nanos / 1e9 if m.HasField("updated_at") else 0.0
        age = now - since
        if age > max_lag:
            out.append(Lagging(m.member_id, age))
    return out


def _member_json(m: Any) -> dict[str, object]:
    return {
        "member_id": m.member_id, "address": m.address, "policy": output.version_json(m.policy),
        "store_revision": m.store_revision, "connected": m.connected, "last_error": m.last_error,
        "updated_at": output.timestamp(m.updated_at),
    }


def run_fleet_status(ns: argparse.Namespace) -> int:
    from consent.v1 import admin_pb2

    def body(conn: AdminConnection) -> int:
        fleet = conn.call("GetFleetStatus", admin_pb2.GetFleetStatusRequest())
        late = lagging(fleet, time.time(), ns.max_lag)
        if ns.output == "json":
            print(output.dumps({
                "store_revision": fleet.store_revision, "store_digest": fleet.store_digest,
                "members": [_member_json(m) for m in fleet.members],
                "lagging": [{"member_id": x.member_id, "seconds": round(x.seconds, 3)} for x in late],
            }))
        else:
            print(f"store revision {fleet.store_revision}, digest {fleet.store_digest[:12]}")
            print(output.table(
                ("MEMBER", "ADDRESS", "GENERATION", "DIGEST", "REVISION", "CONNECTED", "UPDATED", "ERROR"),
                _rows(fleet.members, fleet.store_digest),
            ))
            for x in late:
                print(f"lagging: {x.member_id} has served another digest than the store for {x.seconds:.0f} s "
                      f"(--max-lag {ns.max_lag:g})")
        return connection.EXIT_REFUSED if late else connection.EXIT_OK

    return connection.run(ns, body)


def _rows(members: Sequence[Any], digest: str) -> list[tuple[object, ...]]:
    return [
        (m.member_id, m.address, m.policy.generation,
         m.policy.digest[:12] + ("" if m.policy.digest == digest else " (differs)"), m.store_revision,
         m.connected, output.timestamp(m.updated_at), m.last_error)
        for m in members
    ]
