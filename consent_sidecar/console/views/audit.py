"""GET /audit: the trail newest first, 100 per page, filtered by category, action and `after`.

Reads only (ListAuditEvents through `consent_sidecar.console.trail`); members see what owners
see. An unusable filter re-renders the page with the message beside it, 400. Must never
write, and never show a token (the trail holds principal ids, not tokens).
"""

from __future__ import annotations

from datetime import UTC, datetime

from consent.v1 import admin_pb2
from starlette.requests import Request
from starlette.responses import Response

from consent_sidecar.console.sessions import Session
from consent_sidecar.console.trail import ACTIONS, PAGE_SIZE, FilterError, TrailFilters, action_name, newest_first
from consent_sidecar.console.views.common import console_of, page, render

__all__ = ["audit", "event_row"]


def event_row(e: admin_pb2.AuditEvent) -> dict[str, object]:
    """One event as the table shows it (time in UTC, action by its short name)."""
    when = datetime.fromtimestamp(e.time.seconds + e.time.nanos / 1e9, tz=UTC)
    return {
        "sequence": e.sequence, "time": when.strftime("%Y-%m-%d %H:%M:%S UTC"), "iso": when.isoformat(),
        "actor": e.actor, "action": action_name(e.action), "category": e.category_id, "destination": e.destination,
        "detail": e.detail, "before": e.before_json, "after": e.after_json,
    }


@page
async def audit(request: Request, session: Session) -> Response:
    try:
        filters = TrailFilters.parse(request.query_params)
    except FilterError as e:
        return render(
            request, "audit.html",
            {"filters": TrailFilters(), "raw": request.query_params, "actions": ACTIONS, "rows": [], "older": None,
             "newest": None, "error": str(e), "page_size": PAGE_SIZE},
            session=session, status=400,
        )
    trail = await newest_first(console_of(request).gateway, session.token, filters)
    return render(
        request, "audit.html",
        {"filters": filters, "raw": request.query_params, "actions": ACTIONS,
         "rows": [event_row(e) for e in trail.events],
         "older": filters.query(before=trail.older) if trail.older is not None else None,
         "newest": filters.query(before=None) if filters.before is not None else None,
         "error": "", "page_size": PAGE_SIZE},
        session=session,
    )
