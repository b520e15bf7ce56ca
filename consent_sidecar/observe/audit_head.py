"""The audit trail's head as Prometheus metrics: what a monitor keeps to notice the trail being cut.

Owns `consent_sidecar_audit_head_sequence` (gauge: the newest event's sequence, 0 while the
trail is empty) and `consent_sidecar_audit_head_info{sequence, hash}` (always 1: the newest
event's hash as a label), read from `AuditLog.head` at each scrape by a custom collector, so
exactly one head series exists at a time and nothing is kept between scrapes. A monitor that
stores the last head it saw can check it with `consent-sidecar audit verify --expect-head
SEQ:HASH`, or alert when the sequence goes down. Only the process that owns the trail
registers it. Never reads the database (the head is in memory) and never logs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily

from consent_sidecar.audit.trail import AuditTrail

__all__ = ["AuditHeadCollector"]


class AuditHeadCollector:
    """A prometheus_client collector of one AuditLog's head; `registry.register(AuditHeadCollector(log))`."""

    def __init__(self, audit: AuditTrail) -> None:
        self._audit = audit

    def collect(self) -> Iterator[Any]:
        head = self._audit.head  # one attribute read: consistent sequence and hash
        yield GaugeMetricFamily(
            "consent_sidecar_audit_head_sequence",
            "Sequence of the newest audit event (0: empty); it never goes down unless the trail was cut.",
            value=0 if head is None else head.sequence,
        )
        info = InfoMetricFamily("consent_sidecar_audit_head", "The newest audit event: its sequence and hash.")
        if head is not None:
            info.add_metric([], {"sequence": str(head.sequence), "hash": head.hash})
        yield info

    def describe(self) -> Iterator[Any]:
        return iter(())  # no up-front description: registering never calls collect()
