"""Helpers shared by the audit tests: a deterministic clock, a capturing logger, tampering.

Fixtures built on them (`db`, `captured`, `log`) are in conftest.py.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from consent_core.model import Category, ConsentMapping

from consent_sidecar.audit import AuditAction, AuditLog, AuditRecord, NewEvent

A = AuditAction
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
WAIT = 30.0  # upper bound of every wait in these tests (seconds; generous for slow fsync on busy CI)


class Clock:
    """A deterministic clock: each call one millisecond after the previous."""

    def __init__(self) -> None:
        self.now = T0
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            self.now += timedelta(milliseconds=1)
            return self.now


class Captured:
    """A structlog-shaped logger keeping what it was given."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **kw: Any) -> None:
        self.lines.append((event, kw))


def ev(action: AuditAction = A.POLICY_RELOADED, actor: str = "system", **kw: str) -> NewEvent:
    return NewEvent(actor, action, **kw)


def raw(db: Path) -> sqlite3.Connection:
    """A plain sqlite connection, as a tamperer would use."""
    return sqlite3.connect(db, isolation_level=None)


def tamper(db: Path, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """Run statements with the append-only triggers dropped (what verify exists to catch)."""
    conn = raw(db)
    try:
        conn.execute("DROP TRIGGER audit_events_no_update")
        conn.execute("DROP TRIGGER audit_events_no_delete")
        for sql, params in statements:
            conn.execute(sql, params)
    finally:
        conn.close()


def documented_hash(r: AuditRecord) -> str:
    """The encoding exactly as consent_sidecar.audit.records' docstring states it, written out independently."""
    obj = {
        "sequence": r.sequence,
        "time": r.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor": r.actor,
        "action": "AUDIT_ACTION_" + r.action.name,
        "category_id": r.category_id,
        "destination": r.destination,
        "before_json": r.before_json,
        "after_json": r.after_json,
        "detail": r.detail,
        "prev_hash": r.prev_hash,
    }
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def all_records(log: AuditLog) -> list[AuditRecord]:
    out: list[AuditRecord] = []
    token = "first"
    while token:
        records, token = log.page(page_size=1000, page_token="" if token == "first" else token)
        out.extend(records)
    return out


def policy_of(mapping: ConsentMapping) -> tuple[str, str]:
    return mapping.digest(), mapping.canonical_bytes().decode("utf-8")


M1 = ConsentMapping(categories=(Category("C1", "Ads", ("braze",)),))
M2 = ConsentMapping(categories=(Category("C1", "Ads", ("braze", "heap")),))


def published(mapping: ConsentMapping, detail: str = "") -> NewEvent:
    return ev(detail=f"generation 1 digest {mapping.digest()}{detail}", policy=policy_of(mapping))  # type: ignore[arg-type]
