"""GET /status: what the sidecar serves (generation, digest, source) and its last rejected reload.

One GetPolicyStatus call with the session's token. Fleet members (GetFleetStatus, once the
AdminService has it with the etcd store) belong here too: see `fleet_members`. Must never write.
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


async def fleet_members(gateway: AdminGateway, token: str) -> list[dict[str, object]] | None:
    """The fleet's members for the status page; None while there is no fleet to show.

    FLEET: when the AdminService gains GetFleetStatus (the etcd store), call it here with
    `token`: FAILED_PRECONDITION (a file store) -> None; otherwise one dict per FleetMember
    (member_id, address, policy generation/digest, store_revision, connected, last_error,
    updated_at), which status.html renders under "Fleet members". Until then: None.
    """
    return None


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
