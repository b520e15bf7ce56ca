"""Input limits of the decision API (docs/reference.md, "Limits"); frozen, passed explicitly, never global."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Input limits of the decision API; each is configurable (serve flags)."""

    max_destination_id_bytes: int = 256
    max_destinations: int = 10_000  # per request
    max_batch: int = 10_000  # entries per DecideBatch
    max_event_bytes: int = 1 << 20  # segment_event
    max_event_depth: int = 64  # the event object is depth 1
    max_message_bytes: int = 4 << 20  # gRPC receive/send limit
