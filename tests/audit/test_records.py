"""The audit records and the chain: the documented encoding, sequences and links, event checks,
changes as events, and the action vocabulary against consent.v1.
"""

from __future__ import annotations

import hashlib
import itertools
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from consent_core.diff import ChangeKind, diff
from consent_core.model import Category, ConsentMapping

from consent_sidecar.audit import (
    GENESIS_HASH,
    AuditAction,
    AuditLog,
    NewEvent,
    changes_to_events,
    verify,
)
from consent_sidecar.audit.records import action_of

from .support import (
    M1,
    all_records,
    documented_hash,
    ev,
    published,
)

A = AuditAction


# ---------------------------------------------------------------------------- the chain


def test_first_event_chains_from_64_zeros_and_sequences_increase(log: AuditLog) -> None:
    first = log.append([ev(detail="start")])
    more = log.append([ev(A.CATEGORY_CREATED, "alice", category_id="C0001"), ev(A.PERMISSION_DENIED, "bob")])
    records = first + more
    assert [r.sequence for r in records] == [1, 2, 3]
    assert records[0].prev_hash == GENESIS_HASH == "0" * 64
    for prev, cur in itertools.pairwise(records):
        assert cur.prev_hash == prev.hash
    assert all_records(log) == records


def test_hash_is_sha256_of_the_documented_encoding(log: AuditLog) -> None:
    records = log.append(
        [
            ev(A.CATEGORY_UPDATED, "ålice", category_id="C0002", before_json='{"a":"é"}', after_json='{"a":"\\""}'),
            ev(A.POLICY_RELOAD_FAILED, "file:mappings.yaml", detail='mappings.yaml:7:9: categories[1].id: "x" ✗'),
        ]
    )
    for r in records:
        assert r.hash == documented_hash(r)
        assert len(r.hash) == 64 and r.hash == r.hash.lower()
        assert r.hash == hashlib.sha256(r.canonical_bytes()).hexdigest()
    assert records[0].canonical_bytes().startswith(b'{"action":"AUDIT_ACTION_CATEGORY_UPDATED","actor":"\xc3\xa5lice"')


def test_time_comes_from_the_injected_clock_in_utc(db: Path) -> None:
    east = timezone(timedelta(hours=2))
    with AuditLog.open(db, clock=lambda: datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=east)) as log:
        (r,) = log.append([ev()])
    assert r.time == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert r.time.tzinfo is UTC
    assert b'"time":"2024-05-01T12:00:00.123456Z"' in r.canonical_bytes()


def test_naive_clock_is_refused_and_nothing_is_written(db: Path) -> None:
    with AuditLog.open(db, clock=lambda: datetime(2024, 5, 1)) as log:
        with pytest.raises(ValueError, match="timezone-aware"):
            log.append([ev()])
        assert log.page() == ([], "")


def test_reopening_continues_the_chain(db: Path) -> None:
    with AuditLog.open(db) as log:
        before = log.append([ev(), ev()])
    with AuditLog.open(db) as log:
        (after,) = log.append([ev()])
    assert after.sequence == 3 and after.prev_hash == before[-1].hash
    assert verify(db).ok


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (NewEvent("system", A.UNSPECIFIED), r"entries\[1\]\.action"),
        (NewEvent("system", 99), r"entries\[1\]\.action"),  # type: ignore[arg-type]
        (NewEvent("", A.POLICY_RELOADED), r"entries\[1\]\.actor: must not be empty"),
        (NewEvent("system", A.POLICY_RELOADED, detail="\ud800"), r"entries\[1\]\.detail: not encodable"),
    ],
)
def test_an_unrecordable_entry_appends_nothing(log: AuditLog, bad: NewEvent, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        log.append([ev(), bad, ev()])
    assert log.page() == ([], "")


# ---------------------------------------------------------------------------- changes as events, the vocabulary


def test_changes_to_events_writes_canonical_before_and_after() -> None:
    old = ConsentMapping(categories=(Category("C0002", "Perf", ("b", "a")),))
    new = ConsentMapping(categories=(Category("C0002", "Performance", ("b", "a")),))
    (event,) = changes_to_events(diff(old, new), "file:mappings.yaml")
    assert event == NewEvent(
        actor="file:mappings.yaml",
        action=A.CATEGORY_UPDATED,
        category_id="C0002",
        destination="",
        before_json='{"destinations":["b","a"],"enabled":true,"id":"C0002","name":"Perf","shadow":false}',
        after_json='{"destinations":["b","a"],"enabled":true,"id":"C0002","name":"Performance","shadow":false}',
    )
    created = changes_to_events(diff(ConsentMapping(), old), "alice")
    assert [(e.action, e.destination, e.before_json) for e in created] == [
        (A.CATEGORY_CREATED, "", ""),
        (A.MAPPING_CREATED, "b", ""),
        (A.MAPPING_CREATED, "a", ""),
    ]


def test_mapping_events_carry_only_their_destination_so_the_trail_grows_linearly() -> None:
    # The category's state is on its CATEGORY_* event; each MAPPING_* event names one destination.
    def size(n: int) -> int:
        category = Category("C0009", "Big", tuple(f"dest-{i:06d}" for i in range(n)))
        events = changes_to_events(diff(ConsentMapping(), ConsentMapping(categories=(category,))), "alice")
        assert all(e.before_json == e.after_json == "" for e in events if e.action is A.MAPPING_CREATED)
        deleted = changes_to_events(diff(ConsentMapping(categories=(category,)), ConsentMapping()), "alice")
        assert all(e.before_json == e.after_json == "" for e in deleted if e.action is A.MAPPING_REMOVED)
        assert deleted[0].action is A.CATEGORY_DELETED and '"dest-000000"' in deleted[0].before_json
        return sum(len(e.destination) + len(e.before_json) + len(e.after_json) for e in events)

    small, large = size(1000), size(4000)
    assert large < 4.2 * small  # four times the destinations: four times the text (it was 16 times)


def test_every_change_kind_is_recorded_as_the_action_of_the_same_name() -> None:
    for kind in ChangeKind:
        assert action_of(kind) is AuditAction[kind.name]


def test_audit_action_values_match_consent_v1() -> None:
    from consent.v1 import admin_pb2

    for action in AuditAction:
        assert admin_pb2.AuditAction.Value(action.proto_name) == action.value
    assert len(AuditAction) == len(admin_pb2.AuditAction.keys())


# ---------------------------------------------------------------------------- published policies


def test_the_policy_is_not_part_of_the_hash_nor_of_the_record(log: AuditLog) -> None:
    [with_policy] = log.append([published(M1)])
    assert with_policy.hash == documented_hash(with_policy)
    assert "canonical" not in repr(published(M1))  # a whole mapping is never logged or printed
