"""How the operator commands print: aligned tables for people, JSON for scripts, and the messages they format.

Owns the text of every table and the JSON shape of categories, audit events and policy
status, so that each verb prints the same thing the same way. Must never call the network
or read files: it formats what it is given.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC
from typing import Any

__all__ = [
    "AUDIT_HEADERS", "audit_json", "audit_line", "audit_row", "category_json", "dumps", "short_action", "table",
    "timestamp", "version_json",
]


def dumps(value: object, *, indent: int | None = 2) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=False)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Columns padded to their widest cell, two spaces apart; the last column is not padded."""
    cells = [[str(h) for h in headers], *([_cell(v) for v in row] for row in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        padded = [c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)] + [r[-1]]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    text = "" if value is None else str(value)
    return text or "-"


def timestamp(ts: Any) -> str | None:
    """A google.protobuf.Timestamp as RFC 3339 UTC with milliseconds; None when unset (0)."""
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return str(ts.ToDatetime(tzinfo=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"))


def version_json(v: Any) -> dict[str, object]:
    return {"generation": v.generation, "digest": v.digest}


def category_json(c: Any) -> dict[str, object]:
    """A consent.v1.Category as JSON: every field, the etag included."""
    return {
        "id": c.id, "name": c.name, "destinations": list(c.destinations),
        "enabled": c.enabled if c.HasField("enabled") else True, "shadow": c.shadow, "etag": c.etag,
    }


def short_action(name: str) -> str:
    """AUDIT_ACTION_CATEGORY_CREATED -> CATEGORY_CREATED (tables are read by people)."""
    return name.removeprefix("AUDIT_ACTION_")


def audit_json(e: Any, action_name: str) -> dict[str, object]:
    """A consent.v1.AuditEvent as JSON, `action` as its enum name."""
    return {
        "sequence": e.sequence, "time": timestamp(e.time), "actor": e.actor, "action": action_name,
        "category_id": e.category_id, "destination": e.destination, "before_json": e.before_json,
        "after_json": e.after_json, "detail": e.detail, "prev_hash": e.prev_hash, "hash": e.hash,
    }


AUDIT_HEADERS = ("SEQ", "TIME", "ACTOR", "ACTION", "CATEGORY", "DESTINATION", "DETAIL")


def audit_row(e: Any, action_name: str) -> tuple[object, ...]:
    return (e.sequence, timestamp(e.time), e.actor, short_action(action_name), e.category_id, e.destination,
            e.detail)


def audit_line(e: Any, action_name: str) -> str:
    """One event on one line, for `audit watch` (fields in AUDIT_HEADERS order, blanks as `-`)."""
    return "  ".join(_cell(v) for v in audit_row(e, action_name))
