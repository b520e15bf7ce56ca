"""Typed values crossing the client API: `Request` in, `DecideResult` out.

Plain frozen dataclasses, identical whether the sidecar, the embedded decider or a failure
policy answered (the last sets `degraded`). Converts from the wire messages; never does I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from consent.v1 import decision_pb2

from consent_client.errors import InvalidArgument

__all__ = ["DecideResult", "Decision", "PolicyVersion", "Reason", "Request"]


class Reason(enum.StrEnum):
    """Why a destination was allowed or blocked; each value is the consent.v1.Reason enum name."""

    UNSPECIFIED = "REASON_UNSPECIFIED"  # never sent by the sidecar; a failure policy without a mapping
    NO_CONSENT = "REASON_NO_CONSENT"
    UNMAPPED = "REASON_UNMAPPED"
    GRANTED = "REASON_GRANTED"
    DENIED = "REASON_DENIED"
    EXEMPT = "REASON_EXEMPT"
    UNKNOWN_DESTINATION = "REASON_UNKNOWN_DESTINATION"
    DISABLED_BY_EVENT = "REASON_DISABLED_BY_EVENT"
    PREFERENCE_EVENT = "REASON_PREFERENCE_EVENT"


_REASON_BY_NUMBER: Final[dict[int, Reason]] = {
    decision_pb2.Reason.Value(r.value): r for r in Reason
}


def reason_from_number(number: int) -> Reason:
    """The Reason for a consent.v1.Reason number (UNSPECIFIED for numbers this client does not know)."""
    return _REASON_BY_NUMBER.get(number, Reason.UNSPECIFIED)


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    """The policy snapshot that decided: generation grows on every change; digest = sha256 of the mapping."""

    generation: int
    digest: str


@dataclass(frozen=True, slots=True)
class Decision:
    """The explained decision for one destination, as named in the request."""

    destination: str
    allowed: bool
    reason: Reason
    required_categories: tuple[str, ...] = ()
    missing_categories: tuple[str, ...] = ()
    shadow_missing_categories: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DecideResult:
    """One event's answer. Destinations keep request order; `decisions` only when explained.

    degraded: True when the sidecar could not be reached and the client's failure policy
        answered instead; `failure` then says why (e.g. "UNAVAILABLE: ...").
    error: batch and stream entries only: the request was invalid (the message names the
        field) and nothing was decided; `raise_for_error()` turns it into InvalidArgument.
    """

    allowed: tuple[str, ...] = ()
    blocked: tuple[str, ...] = ()
    decisions: tuple[Decision, ...] = ()
    policy: PolicyVersion | None = None
    degraded: bool = False
    failure: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the entry was decided (it carries no `error`)."""
        return self.error is None

    def is_allowed(self, destination: str) -> bool:
        """Whether `destination` (as named in the request) may receive the event."""
        return destination in self.allowed

    def raise_for_error(self) -> DecideResult:
        """Raises InvalidArgument if the entry was invalid, else returns self (for chaining)."""
        if self.error is not None:
            raise InvalidArgument(self.error)
        return self

    @classmethod
    def from_proto(
        cls, response: decision_pb2.DecideResponse, policy: PolicyVersion | None = None
    ) -> DecideResult:
        """Converts one DecideResponse; `policy` overrides it (DecideBatch reports one for the batch)."""
        if response.error:
            return cls(error=response.error, policy=policy or _policy(response))
        decisions: tuple[Decision, ...] = ()
        if response.decisions:
            decisions = tuple(
                Decision(
                    d.destination,
                    d.allowed,
                    _REASON_BY_NUMBER.get(d.reason, Reason.UNSPECIFIED),
                    tuple(d.required_categories),
                    tuple(d.missing_categories),
                    tuple(d.shadow_missing_categories),
                )
                for d in response.decisions
            )
        return cls(
            tuple(response.allowed),
            tuple(response.blocked),
            decisions,
            policy if policy is not None else _policy(response),
        )

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON data (reasons as enum names), e.g. for logs or the examples."""
        out: dict[str, Any] = {"allowed": list(self.allowed), "blocked": list(self.blocked)}
        if self.decisions:
            out["decisions"] = [
                {
                    "destination": d.destination,
                    "allowed": d.allowed,
                    "reason": d.reason.value,
                    "required_categories": list(d.required_categories),
                    "missing_categories": list(d.missing_categories),
                    "shadow_missing_categories": list(d.shadow_missing_categories),
                }
                for d in self.decisions
            ]
        if self.policy is not None:
            out["policy"] = {"generation": self.policy.generation, "digest": self.policy.digest}
        if self.degraded:
            out["degraded"] = True
            out["failure"] = self.failure
        if self.error is not None:
            out["error"] = self.error
        return out


class _Building:
    """DecideResult's slots without its frozen __setattr__: plain stores, then the class switches.

    The frozen dataclass's __init__ pays one object.__setattr__ per field (seven); this costs a
    third of that, and in-process deciders build one result per event. Same slots in the same
    order, so the same layout: the object *is* a DecideResult afterwards (frozen, equal, hashed
    alike; a test checks it).
    """

    __slots__ = DecideResult.__slots__

    def __init__(self, allowed: tuple[str, ...], blocked: tuple[str, ...], policy: PolicyVersion | None) -> None:
        self.allowed = allowed
        self.blocked = blocked
        self.decisions = ()
        self.policy = policy
        self.degraded = False
        self.failure = None
        self.error = None
        self.__class__ = DecideResult  # type: ignore[assignment]


# `decided(allowed, blocked, policy)` == DecideResult(allowed, blocked, (), policy), built fast.
decided = cast(
    Callable[[tuple[str, ...], tuple[str, ...], PolicyVersion | None], DecideResult], _Building
)


_last_policy = PolicyVersion(0, "")  # answers repeat one snapshot: reuse its object (a benign race)


def _policy(response: decision_pb2.DecideResponse) -> PolicyVersion | None:
    global _last_policy
    if not response.HasField("policy"):
        return None
    p = response.policy
    last = _last_policy
    if p.generation == last.generation and p.digest == last.digest:
        return last
    _last_policy = last = PolicyVersion(p.generation, p.digest)
    return last


def as_destinations(destinations: Sequence[str]) -> tuple[str, ...]:
    """The destination ids as a tuple; a bare str is refused (it would be read as its characters)."""
    if isinstance(destinations, str):
        raise TypeError("destinations must be a sequence of ids, not a single str")
    return destinations if isinstance(destinations, tuple) else tuple(destinations)


def consent_problem(consent: Mapping[str, bool]) -> str | None:
    """Why `consent` is not a categoryPreferences object (str ids, bool values), or None."""
    for key, value in consent.items():
        if value is not True and value is not False:
            return f"consent.category_preferences.{key}: must be a boolean, got {type(value).__name__}"
        if not isinstance(key, str):
            return f"consent.category_preferences: category ids must be strings, got {type(key).__name__}"
    return None


@dataclass(frozen=True, slots=True)
class Request:
    """One event to decide, for `decide_many` and `stream`.

    destinations: ids, optionally `<destination>/<instance>`; empty = every destination the
        mapping knows (sorted by id).
    consent: the consent object's `categoryPreferences`; None = the event carries no consent
        object (every destination allowed). An empty dict grants nothing.
    event: a Segment event (dict, or its raw JSON) instead of `consent`; consent is then read
        from `context.consent` and the event's `integrations` object is honoured.
    """

    destinations: tuple[str, ...] = ()
    consent: Mapping[str, bool] | None = None
    event: Mapping[str, Any] | bytes | str | None = None
    explain: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.destinations, tuple):
            object.__setattr__(self, "destinations", as_destinations(self.destinations))
        if self.consent is not None and self.event is not None:
            raise ValueError("give either consent or event, not both")

    @classmethod
    def for_event(
        cls, event: Mapping[str, Any] | bytes | str, destinations: Sequence[str] = (), *, explain: bool = False
    ) -> Request:
        """A request deciding a Segment event."""
        return cls(as_destinations(destinations), None, event, explain)
