"""How the fleet's audit trail is laid out in etcd: the head, events in chunks, the chain they continue.

Owns the stored forms (`TrailHead`: the last sequence and hash and what the trail accounts
for; a chunk: a JSON array of events, each its canonical JSON (`records`) plus its `hash`, at
most CHUNK_BYTES, keyed by its first sequence) and `chain`, which turns new events into the
records that continue a head. Pure: must never talk to etcd (`etcd` does), read clocks or log.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final

from consent_core import errors

from consent_sidecar.audit.records import (
    GENESIS_HASH,
    AuditAction,
    AuditRecord,
    NewEvent,
    check_new_event,
    event_hash,
    parse_time,
)
from consent_sidecar.audit.records import chain as chain_records

if TYPE_CHECKING:
    from consent_sidecar.etcd.client import KeyValue

__all__ = [
    "CHUNK_BYTES",
    "TrailHead",
    "chain",
    "check_event",
    "decode_chunk",
    "decode_record",
    "encode_chunks",
    "encode_record",
]

CHUNK_BYTES: Final = 128 * 1024  # events stored per key, at most (etcd takes 1.5 MiB per request by default)


@dataclass(frozen=True, slots=True)
class TrailHead:
    """The head of a fleet's trail and what it accounts for; `revision` is the head key's mod_revision."""

    sequence: int = 0
    hash: str = GENESIS_HASH
    policy: str = ""  # digest of the policy the trail last published ("" before the first)
    rejected: str = ""  # sha256 of the document the trail last recorded as rejected; "" once a good one followed
    revision: int = 0  # not stored: where etcd holds this head (0 = no head yet, an empty trail)

    def encode(self) -> bytes:
        data = {"sequence": self.sequence, "hash": self.hash, "policy": self.policy, "rejected": self.rejected}
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, kv: KeyValue | None) -> TrailHead:
        if kv is None:
            return cls()
        try:
            data = json.loads(kv.value)
            return cls(int(data["sequence"]), str(data["hash"]), str(data.get("policy", "")),
                       str(data.get("rejected", "")), kv.mod_revision)  # fmt: skip
        except (ValueError, KeyError, TypeError) as e:
            raise errors.SidecarError(f"internal error: the audit trail's head in etcd is unreadable: {e}") from None


def encode_record(r: AuditRecord) -> bytes:
    """One stored event: its canonical JSON object (`records`) with `hash` added."""
    data = json.loads(r.canonical_bytes())
    data["hash"] = r.hash
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_record(value: bytes) -> AuditRecord:
    """The inverse of `encode_record`; ValueError when the value is not a stored event."""
    try:
        d = json.loads(value)
        action = d["action"]
        if not isinstance(action, str) or not action.startswith("AUDIT_ACTION_"):
            raise ValueError(f"unknown action {action!r}")
        return AuditRecord(
            sequence=int(d["sequence"]), time=parse_time(d["time"]), actor=str(d["actor"]),
            action=AuditAction[action.removeprefix("AUDIT_ACTION_")], category_id=str(d["category_id"]),
            destination=str(d["destination"]), before_json=str(d["before_json"]), after_json=str(d["after_json"]),
            detail=str(d["detail"]), prev_hash=str(d["prev_hash"]), hash=str(d["hash"]),
        )  # fmt: skip
    except (KeyError, TypeError) as e:
        raise ValueError(f"not a stored audit event: {e}") from None


def encode_chunks(records: Sequence[AuditRecord]) -> list[tuple[int, bytes]]:
    """The records as (first sequence, JSON array) chunks of at most CHUNK_BYTES (one record may exceed it)."""
    out: list[tuple[int, bytes]] = []
    batch: list[bytes] = []
    first, size = 0, 0
    for r in records:
        data = encode_record(r)
        if batch and size + len(data) > CHUNK_BYTES:
            out.append((first, b"[" + b",".join(batch) + b"]"))
            batch, size = [], 0
        if not batch:
            first = r.sequence
        batch.append(data)
        size += len(data) + 1
    if batch:
        out.append((first, b"[" + b",".join(batch) + b"]"))
    return out


def decode_chunk(value: bytes) -> list[AuditRecord]:
    """The records of one stored chunk; ValueError when it is not one."""
    try:
        items = json.loads(value)
    except ValueError as e:
        raise ValueError(f"not a stored chunk of audit events: {e}") from None
    if not isinstance(items, list):
        raise ValueError("not a stored chunk of audit events: not a JSON array")
    return [decode_record(json.dumps(item, ensure_ascii=False).encode("utf-8")) for item in items]


def chain(head: TrailHead, events: Sequence[NewEvent], time: datetime) -> list[AuditRecord]:
    """The records `events` become when appended after `head` (pure; checked like AuditLog.append)."""
    for i, e in enumerate(events):
        check_new_event(i, e)
    return chain_records(head.sequence, head.hash, events, time)


def check_event(r: AuditRecord, expected: int, prev: str) -> tuple[str, str] | None:
    """(kind, reason) when the stored event `r`, expected at `expected` after `prev`, breaks the chain."""
    if r.sequence != expected:
        return "removed", f"event {expected} is missing (next is {r.sequence}): an event was removed"
    if event_hash(r.canonical_bytes()) != r.hash:
        return "altered", f"event {expected}'s hash does not match its contents: the event was altered"
    if r.prev_hash != prev:
        if expected == 1:
            return "bad_first_prev_hash", "event 1's prev_hash is not 64 zeros"
        return "relinked", f"event {expected}'s prev_hash does not match event {expected - 1}'s hash"
    return None
