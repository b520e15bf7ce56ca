"""The audit interface the services, the gate and the process see: one Protocol, two adapters.

`AuditLog` (SQLite, beside a mapping file) and `EtcdTrail` (one trail per etcd prefix, shared
by a fleet) both satisfy `AuditTrail`: blocking `append` / `page` / `close` (called from worker
threads), `head` (an attribute read), and `watch`, an async generator of the backlog (paced by
an optional `pacing.Pacer`) then live events. Nothing above `audit/` and `store/` names either
adapter. Pure declaration: must never do anything.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Protocol

from consent_sidecar.audit.anchor import Head
from consent_sidecar.audit.pacing import Pacer
from consent_sidecar.audit.records import AuditRecord, NewEvent

__all__ = ["AuditTrail"]


class AuditTrail(Protocol):
    @property
    def watchers(self) -> int: ...

    @property
    def head(self) -> Head | None:
        """The newest event known (sequence and hash), None for an empty trail; never blocks."""
        ...

    def append(self, entries: Sequence[NewEvent]) -> list[AuditRecord]: ...

    def page(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        category_id: str = "",
        action: int = 0,
        after_sequence: int = 0,
    ) -> tuple[list[AuditRecord], str]: ...

    def watch(
        self,
        after_sequence: int,
        *,
        buffer: int = 1024,
        on_live: Callable[[], object] | None = None,
        pace: Pacer | None = None,
    ) -> AsyncGenerator[AuditRecord, None]: ...

    def close(self) -> None: ...
