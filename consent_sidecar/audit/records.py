"""The audit vocabulary and the hash chain: what an event is, how it is encoded, how it is hashed.

Owns `AuditAction` (values equal consent.v1.AuditAction), `NewEvent` (what is appended),
`AuditRecord` (what is stored), `PublishedPolicy`, the canonical encoding below, the sha256
chain (`GENESIS_HASH`, `event_hash`), the checks an entry must pass before it may be
appended, `chain` (new events -> the records continuing a trail, for both stores), the
fields of each event's "audit" log line, and `changes_to_events` with `action_of`: the one
place a core `ChangeKind` becomes an `AuditAction`. Pure: must never do I/O, read clocks, log, or import generated
protobuf code; the SQLite store and the services are the shells around it.

Canonical encoding (what `hash` covers; reproducible in any language). For each event,
the UTF-8 bytes of the JSON object with exactly these ten keys, serialised with keys
sorted, no whitespace (separators "," and ":"), non-ASCII characters written as
themselves (not \\u escapes; json.dumps(..., sort_keys=True, separators=(",", ":"),
ensure_ascii=False) in Python):

    sequence     JSON integer, 1, 2, 3, ...
    time         string, RFC 3339 UTC with exactly six fractional digits and "Z",
                 e.g. "2024-05-01T12:00:00.000000Z"
    actor        string
    action       string, the consent.v1 enum value name, e.g. "AUDIT_ACTION_CATEGORY_CREATED"
    category_id  string ("" where none)
    destination  string ("" where none)
    before_json  string ("" where none; itself compact sorted-key JSON when set)
    after_json   string (same)
    detail       string
    prev_hash    string, the previous event's `hash`; 64 "0"s for sequence 1

    hash = lowercase hex sha256 of those bytes.

So each hash commits to the event's position and to every earlier event. `verify` finds
altered, removed, reordered or re-chained rows; it cannot see the newest events being cut
off the end, for that compare with the last hash a log shipper saw (each event is also
logged as one structlog line "audit" carrying its hash).

A POLICY_RELOADED `NewEvent` may carry the policy it published (`policy`); that is stored
beside the event, content-addressed, and is not part of its hash (see `sqlite`).
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from consent_core.diff import Change, ChangeKind

__all__ = [
    "GENESIS_HASH",
    "AuditAction",
    "AuditRecord",
    "NewEvent",
    "PublishedPolicy",
    "action_of",
    "canonical_bytes",
    "canonical_json",
    "chain",
    "changes_to_events",
    "check_new_event",
    "event_hash",
    "format_time",
    "log_fields",
    "parse_time",
]

GENESIS_HASH: Final = "0" * 64


class AuditAction(enum.IntEnum):
    """What an audit event records; values equal consent.v1.AuditAction (names without the prefix)."""

    UNSPECIFIED = 0  # never recorded
    CATEGORY_CREATED = 1
    CATEGORY_UPDATED = 2  # id, name, destinations (incl. their order) or shadow changed
    CATEGORY_DISABLED = 3
    CATEGORY_ENABLED = 4
    CATEGORY_DELETED = 5
    MAPPING_CREATED = 6  # a destination was mapped to a category
    MAPPING_REMOVED = 7  # a destination was unmapped from a category
    POLICY_RELOADED = 8
    POLICY_RELOAD_FAILED = 9
    PERMISSION_DENIED = 10

    @property
    def proto_name(self) -> str:
        """The consent.v1 enum value name, e.g. `AUDIT_ACTION_CATEGORY_CREATED`."""
        return f"AUDIT_ACTION_{self.name}"


# Spelled out rather than matched by name: the core may rename or add kinds without
# silently changing what the trail records (a test checks every kind is here).
_ACTION_OF: Final[Mapping[ChangeKind, AuditAction]] = {
    ChangeKind.CATEGORY_CREATED: AuditAction.CATEGORY_CREATED,
    ChangeKind.CATEGORY_UPDATED: AuditAction.CATEGORY_UPDATED,
    ChangeKind.CATEGORY_DISABLED: AuditAction.CATEGORY_DISABLED,
    ChangeKind.CATEGORY_ENABLED: AuditAction.CATEGORY_ENABLED,
    ChangeKind.CATEGORY_DELETED: AuditAction.CATEGORY_DELETED,
    ChangeKind.MAPPING_CREATED: AuditAction.MAPPING_CREATED,
    ChangeKind.MAPPING_REMOVED: AuditAction.MAPPING_REMOVED,
}


def action_of(kind: ChangeKind) -> AuditAction:
    """The audit action recording a core change of this kind."""
    return _ACTION_OF[kind]


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append; the log assigns sequence, time and the hashes."""

    actor: str  # principal id, "file:<basename>" or "system"
    action: AuditAction
    category_id: str = ""
    destination: str = ""
    before_json: str = ""
    after_json: str = ""
    detail: str = ""
    # POLICY_RELOADED only: the policy it published, (sha256 hex digest, canonical mapping JSON);
    # stored beside the event, not part of its hash (module docstring).
    policy: tuple[str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class PublishedPolicy:
    """The policy a POLICY_RELOADED event published, as stored with it (see `sqlite`)."""

    sequence: int  # of the POLICY_RELOADED event
    digest: str  # sha256 hex of canonical
    canonical: str  # the mapping's canonical JSON (consent_core.model.ConsentMapping.canonical_bytes, decoded)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One stored event, as consent.v1.AuditEvent carries it (time is a UTC datetime)."""

    sequence: int
    time: datetime
    actor: str
    action: AuditAction
    category_id: str
    destination: str
    before_json: str
    after_json: str
    detail: str
    prev_hash: str
    hash: str

    def canonical_bytes(self) -> bytes:
        """The bytes `hash` is the sha256 of (see the module docstring)."""
        return canonical_bytes(
            sequence=self.sequence,
            time=format_time(self.time),
            actor=self.actor,
            action=self.action,
            category_id=self.category_id,
            destination=self.destination,
            before_json=self.before_json,
            after_json=self.after_json,
            detail=self.detail,
            prev_hash=self.prev_hash,
        )


def format_time(t: datetime) -> str:
    """RFC 3339 UTC with microseconds and "Z", e.g. 2024-05-01T12:00:00.000000Z; rejects naive datetimes."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"audit time must be timezone-aware, got naive {t!r}")
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(s: str) -> datetime:
    """The inverse of `format_time` (as stored in the database)."""
    # fromisoformat reads the stored form exactly (the "Z" as UTC) some 40 times faster than
    # strptime: every row a page or a watcher reads goes through here.
    t = datetime.fromisoformat(s)
    if t.tzinfo is None:
        raise ValueError(f"audit time {s!r} has no time zone")
    return t.astimezone(UTC)


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys and literal non-ASCII: the form of before_json / after_json."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_bytes(
    *,
    sequence: int,
    time: str,
    actor: str,
    action: AuditAction | int,
    category_id: str,
    destination: str,
    before_json: str,
    after_json: str,
    detail: str,
    prev_hash: str,
) -> bytes:
    """The canonical encoding of one event (module docstring); `time` already formatted."""
    return canonical_json(
        {
            "sequence": sequence,
            "time": time,
            "actor": actor,
            "action": AuditAction(action).proto_name,
            "category_id": category_id,
            "destination": destination,
            "before_json": before_json,
            "after_json": after_json,
            "detail": detail,
            "prev_hash": prev_hash,
        }
    ).encode("utf-8")


def event_hash(canonical: bytes) -> str:
    """sha256 lowercase hex of a canonical encoding."""
    return hashlib.sha256(canonical).hexdigest()


def chain(sequence: int, prev_hash: str, events: Sequence[NewEvent], time: datetime) -> list[AuditRecord]:
    """The records `events` become when appended after event `sequence` (hash `prev_hash`), all at `time`.

    The SQLite and etcd trails both extend their chain here. The caller checks each event
    first (`check_new_event`); ValueError for a naive `time`. The records' time is `time` as
    stored (to the microsecond), so a record read back compares equal.
    """
    stamp = format_time(time)
    at = parse_time(stamp)
    seq, prev = sequence, prev_hash
    out: list[AuditRecord] = []
    for e in events:
        seq += 1
        action = AuditAction(e.action)
        digest = event_hash(canonical_bytes(
            sequence=seq, time=stamp, actor=e.actor, action=action, category_id=e.category_id,
            destination=e.destination, before_json=e.before_json, after_json=e.after_json, detail=e.detail,
            prev_hash=prev,
        ))  # fmt: skip
        out.append(AuditRecord(seq, at, e.actor, action, e.category_id, e.destination, e.before_json,
                               e.after_json, e.detail, prev, digest))  # fmt: skip
        prev = digest
    return out


def log_fields(r: AuditRecord) -> dict[str, Any]:
    """The fields of the "audit" log line each stored event is written as (log shippers anchor on `hash`)."""
    return {
        "sequence": r.sequence,
        "time": format_time(r.time),
        "actor": r.actor,
        "action": r.action.proto_name,
        "category_id": r.category_id,
        "destination": r.destination,
        "detail": r.detail,
        "prev_hash": r.prev_hash,
        "hash": r.hash,
    }


def changes_to_events(changes: Sequence[Change], actor: str) -> list[NewEvent]:
    """One NewEvent per change: category events carry the category before/after as canonical JSON
    ("" where it is absent); mapping events (MAPPING_CREATED / MAPPING_REMOVED) carry only
    `category_id` and `destination`, with before/after empty.

    The category's state is on the change's CATEGORY_* event, so the trail grows linearly
    with the destinations changed (a mapping event carrying its whole category would grow with
    their square).
    """
    events: list[NewEvent] = []
    for c in changes:
        action = action_of(c.kind)
        if action in _MAPPING_ACTIONS:
            events.append(NewEvent(actor=actor, action=action, category_id=c.category_id, destination=c.destination))
            continue
        before = "" if c.before is None else canonical_json(c.before)
        after = "" if c.after is None else canonical_json(c.after)
        events.append(NewEvent(actor, action, c.category_id, before_json=before, after_json=after))
    return events


_MAPPING_ACTIONS: Final = frozenset({AuditAction.MAPPING_CREATED, AuditAction.MAPPING_REMOVED})


def check_new_event(i: int, e: NewEvent) -> None:
    """ValueError naming `entries[i].<field>` unless `e` may be appended (checked before any write)."""
    try:
        action = AuditAction(e.action)
    except ValueError:
        action = AuditAction.UNSPECIFIED
    if action is AuditAction.UNSPECIFIED:
        raise ValueError(f"entries[{i}].action: {e.action!r} is not a recordable AuditAction")
    if not e.actor:
        raise ValueError(f"entries[{i}].actor: must not be empty")
    _check_policy(i, e)
    for name in ("actor", "category_id", "destination", "before_json", "after_json", "detail"):
        value = getattr(e, name)
        if not isinstance(value, str):
            raise ValueError(f"entries[{i}].{name}: must be a str, got {type(value).__name__}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"entries[{i}].{name}: not encodable as UTF-8 ({exc.reason})") from None


def _check_policy(i: int, e: NewEvent) -> None:
    if e.policy is None:
        return
    if e.action != AuditAction.POLICY_RELOADED:
        raise ValueError(f"entries[{i}].policy: only a POLICY_RELOADED event publishes a policy")
    if not (isinstance(e.policy, tuple) and len(e.policy) == 2 and all(isinstance(v, str) for v in e.policy)):
        raise ValueError(f"entries[{i}].policy: must be a (digest, canonical) pair of str")
    digest, canonical = e.policy
    try:
        actual = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    except UnicodeEncodeError as exc:
        raise ValueError(f"entries[{i}].policy: canonical is not encodable as UTF-8 ({exc.reason})") from None
    if actual != digest:
        raise ValueError(f"entries[{i}].policy: canonical hashes to {actual}, not to its digest {digest!r}")
    if f"digest {digest}" not in e.detail:
        raise ValueError(f"entries[{i}].policy: the event's detail must name 'digest {digest}'")
