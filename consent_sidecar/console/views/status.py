"""GET /status: what the sidecar serves (generation, digest, source) and its last rejected reload.

One GetPolicyStatus call with the session's token, and one GetFleetStatus: with the etcd
fleet store the page lists every live sidecar and what it serves, the ones behind the store's
document marked. Must never write.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2
from starlette.requests import Request
from starlette.responses import Response

from consent_sidecar.console.admin import AdminGateway
from consent_sidecar.console.sessions import Session
from consent_sidecar.console.views.common import console_of, page, render

__all__ = ["fleet_members", "status"]


def _when(ts: timestamp_pb2.Timestamp) -> str:
    if ts.seconds == 0 and ts.nanos == 0:
        return ""
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


async def fleet_members(gateway: AdminGateway, token: str) -> dict[str, object] | None:
    """The fleet for the status page: the store's revision and digest and one row per member; None without one."""
    fleet = await gateway.fleet_status(token)
    if fleet is None:
        return None
    members = [
        {
            "member_id": m.member_id, "address": m.address, "generation": m.policy.generation,
            "digest": m.policy.digest, "store_revision": m.store_revision, "connected": m.connected,
            "last_error": m.last_error, "updated_at": _when(m.updated_at),
            "current": m.policy.digest == fleet.store_digest and m.store_revision >= fleet.store_revision,
        }
        for m in sorted(fleet.members, key=lambda m: m.member_id)
    ]
    return {
        "store_revision": fleet.store_revision, "store_digest": fleet.store_digest, "members": members,
        "behind": sum(1 for m in members if not m["current"]),
    }


@page
async def status(request: Request, session: Session) -> Response:
    gateway = console_of(request).gateway
    s = await gateway.policy_status(session.token)
    return render(
        request, "status.html",
        {
            "generation": s.policy.generation, "digest": s.policy.digest, "source": s.source,
            "loaded_at": _when(s.loaded_at), "reloads": s.reloads, "failed_reloads": s.failed_reloads,
            "last_error": s.last_error, "last_error_at": _when(s.last_error_at), "categories": s.categories,
            "destinations": s.destinations, "fleet": await fleet_members(gateway, session.token),
        },
        session=session,
    )
