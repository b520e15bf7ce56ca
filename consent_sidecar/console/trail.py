"""The audit trail newest first, a page at a time, from ListAuditEvents (which reads oldest first).

ListAuditEvents pages forward from `after_sequence`. To show the newest events first without
reading the whole trail, `newest_first` finds the trail's head by a galloping search (about
2·log2(head) one-event calls), then reads windows of sequences backwards from it, each four
times the last, until it holds one page. Filters are the API's (category, action, after), so
a member sees exactly what ListAuditEvents shows them. Must never write, and never hold more
than one window of events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from consent.v1 import admin_pb2

from consent_sidecar.console.admin import AdminGateway

__all__ = ["ACTIONS", "PAGE_SIZE", "TrailFilters", "TrailPage", "action_name", "newest_first"]

PAGE_SIZE: Final = 100  # events per console page
_READ_PAGE: Final = 1000  # events per ListAuditEvents call (the API's maximum)
_FIRST_WINDOW: Final = 1024
_MAX_SEQUENCE: Final = (1 << 63) - 1
_PREFIX: Final = "AUDIT_ACTION_"

# Short names ("CATEGORY_DISABLED") for the filter and the table, in the enum's order.
ACTIONS: Final[tuple[str, ...]] = tuple(
    v.name.removeprefix(_PREFIX) for v in admin_pb2.AuditAction.DESCRIPTOR.values if v.number != 0
)


def action_name(value: int) -> str:
    """`AUDIT_ACTION_CATEGORY_DISABLED` -> `CATEGORY_DISABLED`; an unknown number as itself."""
    try:
        return admin_pb2.AuditAction.Name(value).removeprefix(_PREFIX)
    except ValueError:
        return str(value)


class FilterError(ValueError):
    """A query parameter of /audit is unusable; the message names it."""


@dataclass(frozen=True, slots=True)
class TrailFilters:
    """What /audit was asked for: `category`, `action`, `after` as the API filters them; `before` pages."""

    category: str = ""
    action: str = ""  # short name, "" = any
    after: int = 0
    before: int | None = None  # show events older than this sequence (the "older" link)

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> TrailFilters:
        category = query.get("category", "").strip()
        action = query.get("action", "").strip().upper().removeprefix(_PREFIX)
        if action and action not in ACTIONS:
            raise FilterError(f"action: unknown audit action {action!r} (one of {', '.join(ACTIONS)})")
        return cls(category, action, _sequence(query, "after") or 0, _sequence(query, "before"))

    @property
    def action_value(self) -> int:
        return admin_pb2.AuditAction.Value(_PREFIX + self.action) if self.action else 0

    def query(self, **changes: object) -> dict[str, str]:
        """The filters as query parameters for a link, with `changes` applied; empty ones left out."""
        values: dict[str, object] = {
            "category": self.category, "action": self.action, "after": self.after or "", "before": self.before or "",
        }
        values.update(changes)
        return {k: str(v) for k, v in values.items() if v not in ("", None, 0)}


def _sequence(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) > _MAX_SEQUENCE:
        raise FilterError(f"{name}: expected a sequence number (0 or more), got {raw!r}")
    return int(raw)


@dataclass(frozen=True, slots=True)
class TrailPage:
    events: list[admin_pb2.AuditEvent]  # newest first
    older: int | None  # `before` for the next, older page; None when there is none


async def newest_first(
    gateway: AdminGateway, token: str, filters: TrailFilters, *, limit: int = PAGE_SIZE
) -> TrailPage:
    """Up to `limit` events matching `filters` with sequence above `after` and below `before`, newest first."""
    head = await _head(gateway, token)
    upper = head if filters.before is None else min(head, filters.before - 1)
    floor = filters.after
    found: list[admin_pb2.AuditEvent] = []  # ascending, covering (lo, upper]
    window, hi = _FIRST_WINDOW, upper
    while hi > floor:
        lo = max(floor, hi - window)
        found[:0] = await _range(gateway, token, filters, lo, hi)
        if len(found) > limit or lo == floor:
            break
        hi, window = lo, window * 4
    page = found[-limit:][::-1]
    return TrailPage(page, page[-1].sequence if len(found) > limit else None)


async def _range(
    gateway: AdminGateway, token: str, filters: TrailFilters, lo: int, hi: int
) -> list[admin_pb2.AuditEvent]:
    """Matching events with lo < sequence <= hi, ascending."""
    out: list[admin_pb2.AuditEvent] = []
    page_token = ""
    while True:
        r = await gateway.audit_page(
            token, category_id=filters.category, action=filters.action_value, after=lo, page_size=_READ_PAGE,
            page_token=page_token,
        )
        for event in r.events:
            if event.sequence > hi:
                return out
            out.append(event)
        if not r.next_page_token:
            return out
        page_token = r.next_page_token


async def _head(gateway: AdminGateway, token: str) -> int:
    """The trail's newest sequence (0 when empty): the least x with no event after it."""

    async def any_after(x: int) -> bool:
        return bool((await gateway.audit_page(token, after=x, page_size=1)).events)

    if not await any_after(0):
        return 0
    lo, hi = 0, 1  # invariant: an event after lo, none after hi (once found)
    while await any_after(hi):
        lo, hi = hi, min(hi * 2, _MAX_SEQUENCE)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if await any_after(mid):
            lo = mid
        else:
            hi = mid
    return hi
