"""Limits of the decision API and of a mapping (docs/reference.md, "Limits"); frozen, passed explicitly."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits", "MappingLimits"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Input limits of the decision API; each is configurable (serve flags)."""

    max_destination_id_bytes: int = 256
    max_destinations: int = 10_000  # per request
    max_batch: int = 10_000  # entries per DecideBatch
    max_event_bytes: int = 1 << 20  # segment_event
    max_event_depth: int = 64  # the event object is depth 1
    max_message_bytes: int = 4 << 20  # gRPC receive/send limit


@dataclass(frozen=True, slots=True)
class MappingLimits:
    """How large a mapping may be (serve and check flags); beyond them it is a mapping error.

    They bound what one policy costs to read, compile and hold: a decision's masks grow with
    the categories, the tables with the destinations. The file's size in bytes is bounded
    where it is read.
    """

    max_categories: int = 1_000  # categories in the mapping (enabled, disabled and shadow)
    max_destinations: int = 100_000  # distinct destination ids, categories and `destinations:` together
