"""What a decision is: `Reason`, the explained `Decision` of one destination, the `Outcome` of one event.

Plain immutable values, shared by the compiled index (consent_core.index), its pass
(consent_core.split) and every caller. No behaviour, no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["Decision", "Outcome", "Reason"]


class Reason(enum.IntEnum):
    """Why a destination was allowed or blocked; values equal consent.v1.Reason."""

    UNSPECIFIED = 0
    NO_CONSENT = 1
    UNMAPPED = 2
    GRANTED = 3
    DENIED = 4
    EXEMPT = 5
    UNKNOWN_DESTINATION = 6
    DISABLED_BY_EVENT = 7
    PREFERENCE_EVENT = 8


@dataclass(frozen=True, slots=True)
class Decision:
    """The explained decision for one destination, as named in the request."""

    destination: str
    allowed: bool
    reason: Reason
    required_categories: tuple[str, ...] = ()
    missing_categories: tuple[str, ...] = ()
    shadow_missing_categories: tuple[str, ...] = ()


class Outcome(NamedTuple):
    """One event's answer: destinations in request order; `decisions` only when explained.

    A NamedTuple (immutable like a frozen dataclass) because one is built per decided event:
    `tuple.__new__(Outcome, (allowed, blocked, None))` costs a third of a frozen dataclass's
    per-field __setattr__.
    """

    allowed: tuple[str, ...]
    blocked: tuple[str, ...]
    decisions: tuple[Decision, ...] | None = None
